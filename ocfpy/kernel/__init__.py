"""Low-level helpers for the Linux kernel crypto API, shared by plugins/af_alg and drivers/.

- `afalg`: the AF_ALG transport (bind by algorithm name or by exact kernel driver name,
  one bound + accepted socket pair per context).
- `keyctl`: MODP Diffie-Hellman computed by the kernel (KEYCTL_DH_COMPUTE).
- `proc_crypto`: what /proc/crypto says is registered (name, driver, module, priority, ...).

These are the hazardous layer: consumers use `ocfpy.crypto.session`, never these.
"""
