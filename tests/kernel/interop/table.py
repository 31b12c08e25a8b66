"""The interop rows per peer (issue 15), in each peer's own configuration words.

``M(label, ocfpy's expected IKE suite, ocfpy's expected ESP suite, peer ike, peer esp, extra)``
is a matrix row: ocfpy's matrix connection (conftest.MATRIX_IKE / MATRIX_ESP) offers and accepts
every suite below, so the peer's one-suite configuration decides the row. Roles alternate from
row to row, so each peer meets ocfpy both as initiator and as responder while the lane stays
short. A row a peer cannot do carries ``impossible=`` with the peer's own reason: it is
recorded and shown as such, never silently left out.
"""

from __future__ import annotations

from tests.kernel.interop.rows import ZERO_CONFIG, Row

ROLES = ("ocfpy initiates", "peer initiates")


def M(label, ike, esp, peer_ike, peer_esp, extra=None, *, impossible=None):  # noqa: N802
    return (label, ike, esp, {"ike": peer_ike, "esp": peer_esp,
                              **({"extra": extra} if extra else {})}, impossible)


# libreswan proposes and, as responder, prefers ESN when both sides allow it (its default is
# esn=either); rows not about ESN say esn=no so that the row's suite is deterministic.
LIBRESWAN = [
    M("AES-GCM-16-256, ECP-256", "aes256gcm16-prfsha512-ecp256", "aes256gcm16",
        "aes_gcm256-sha2_512-dh19", "aes_gcm256", "esn=no"),
    M("AES-GCM-16-128, Curve25519", "aes128gcm16-prfsha256-x25519", "aes128gcm16",
        "aes_gcm128-sha2_256-dh31", "aes_gcm128", "esn=no"),
    M("ChaCha20-Poly1305, Curve25519", "chacha20poly1305-prfsha256-x25519",
        "chacha20poly1305", "chacha20_poly1305-sha2_256-dh31", "chacha20_poly1305", "esn=no"),
    M("AES-CBC-256 + HMAC-SHA2-256, MODP 2048", "aes256-sha256-prfsha256-modp2048",
        "aes256-sha256", "aes256-sha2_256-modp2048", "aes256-sha2_256", "esn=no"),
    M("AES-CBC-256 + HMAC-SHA2-384, ECP-384", "aes256-sha384-prfsha384-ecp384",
        "aes256-sha384", "aes256-sha2_384-dh20", "aes256-sha2_384", "esn=no"),
    M("AES-CBC-256 + HMAC-SHA2-512, ECP-521", "aes256-sha512-prfsha512-ecp521",
        "aes256-sha512", "aes256-sha2_512-dh21", "aes256-sha2_512", "esn=no"),
    M("AES-CTR-128 + HMAC-SHA2-256, MODP 3072", "aes128-sha256-prfsha256-modp3072",
        "aes128ctr-sha256", "aes128-sha2_256-modp3072", "aes_ctr128-sha2_256", "esn=no"),
    M("AES-CBC-128 + HMAC-SHA2-512, MODP 4096, ESN", "aes128-sha512-prfsha512-modp4096",
        "aes128-sha512-esn", "aes128-sha2_512-modp4096", "aes128-sha2_512", "esn=yes"),
    M("AES-GCM-16-256, ECP-384, ESN", "aes256gcm16-prfsha384-ecp384", "aes256gcm16-esn",
        "aes_gcm256-sha2_384-dh20", "aes_gcm256", "esn=yes"),
    M("AES-CBC-128 + HMAC-SHA1-96 (weak, warned)", "aes128gcm16-prfsha256-x25519",
        "aes128-sha1", "aes_gcm128-sha2_256-dh31", "aes128-sha1", "esn=no"),
    M("Curve448", "aes256gcm16-prfsha512-x448", "aes256gcm16", "aes_gcm256-sha2_512-dh32",
        "aes_gcm256", impossible="libreswan 4.10 has no Curve448 (DH32): the DH algorithms pluto "
        "lists at start-up are MODP 1536-8192, DH19-21 and DH31 (Curve25519) only"),
]

STRONGSWAN = [
    M("AES-GCM-16-256, ECP-256", "aes256gcm16-prfsha512-ecp256", "aes256gcm16",
        "aes256gcm16-prfsha512-ecp256", "aes256gcm16"),
    M("AES-GCM-16-128, Curve25519", "aes128gcm16-prfsha256-x25519", "aes128gcm16",
        "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
    M("ChaCha20-Poly1305, Curve25519", "chacha20poly1305-prfsha256-x25519",
        "chacha20poly1305", "chacha20poly1305-prfsha256-x25519", "chacha20poly1305"),
    M("AES-CBC-256 + HMAC-SHA2-256, MODP 2048", "aes256-sha256-prfsha256-modp2048",
        "aes256-sha256", "aes256-sha256-modp2048", "aes256-sha256"),
    M("AES-CBC-256 + HMAC-SHA2-384, ECP-384", "aes256-sha384-prfsha384-ecp384",
        "aes256-sha384", "aes256-sha384-ecp384", "aes256-sha384"),
    M("AES-CBC-256 + HMAC-SHA2-512, ECP-521", "aes256-sha512-prfsha512-ecp521",
        "aes256-sha512", "aes256-sha512-ecp521", "aes256-sha512"),
    M("AES-CTR-128 + HMAC-SHA2-256, MODP 3072", "aes128-sha256-prfsha256-modp3072",
        "aes128ctr-sha256", "aes128-sha256-modp3072", "aes128ctr-sha256"),
    M("AES-CBC-128 + HMAC-SHA2-512, MODP 4096, ESN", "aes128-sha512-prfsha512-modp4096",
        "aes128-sha512-esn", "aes128-sha512-modp4096", "aes128-sha512-esn"),
    M("AES-GCM-16-256, Curve448, ESN", "aes256gcm16-prfsha384-x448", "aes256gcm16-esn",
        "aes256gcm16-prfsha384-curve448", "aes256gcm16-esn"),
    M("AES-CBC-128 + HMAC-SHA1-96 (weak, warned)", "aes128gcm16-prfsha256-x25519",
        "aes128-sha1", "aes128gcm16-prfsha256-x25519", "aes128-sha1"),
]

OPENIKED = [
    M("IKE AES-GCM-16-256 ECP-256; ESP AES-CBC-256 + HMAC-SHA1-96",
        "aes256gcm16-prfsha256-ecp256", "aes256-sha1",
        "ikesa enc aes-256-gcm prf hmac-sha2-256 group ecp256",
        "childsa enc aes-256 auth hmac-sha1"),
    M("IKE AES-CBC-128 + HMAC-SHA2-256 Curve25519; ESP AES-CBC-128 + HMAC-SHA2-512",
        "aes128-sha256-prfsha256-x25519", "aes128-sha512",
        "ikesa enc aes-128 auth hmac-sha2-256 prf hmac-sha2-256 group curve25519",
        "childsa enc aes-128 auth hmac-sha2-512"),
    M("IKE AES-GCM-16-128 ECP-384; ESP AES-CBC-256 + HMAC-SHA2-384",
        "aes128gcm16-prfsha384-ecp384", "aes256-sha384",
        "ikesa enc aes-128-gcm prf hmac-sha2-384 group ecp384",
        "childsa enc aes-256 auth hmac-sha2-384"),
    M("IKE AES-CBC-256 + HMAC-SHA2-512 MODP 3072; ESP AES-CBC-256 + HMAC-SHA1-96 (weak, warned)",
        "aes256-sha512-prfsha512-modp3072", "aes256-sha1",
        "ikesa enc aes-256 auth hmac-sha2-512 prf hmac-sha2-512 group modp3072",
        "childsa enc aes-256 auth hmac-sha1"),
    M("ESP AES-GCM-16", "aes256gcm16-prfsha256-ecp256", "aes256gcm16",
        "ikesa enc aes-256-gcm prf hmac-sha2-256 group ecp256", "childsa enc aes-256-gcm",
        impossible="OpenIKED answers NO_PROPOSAL_CHOSEN to ocfpy's AES-GCM-16 offer (its log: "
        "'ikev2_ike_auth_recv: no proposal chosen'): on Linux its ESP goes through PF_KEY, "
        "which cannot carry AEADs"),
    M("ESP AES-CBC + HMAC-SHA2-256", "aes256gcm16-prfsha256-ecp256", "aes256-sha256",
        "ikesa enc aes-256-gcm prf hmac-sha2-256 group ecp256",
        "childsa enc aes-256 auth hmac-sha2-256",
        impossible="OpenIKED cannot install it: its log says 'ikev2_childsa_enable: "
        "failed to load CHILD SA' right after pfkey_sa_add (Linux PF_KEY), and no traffic "
        "passes"),
]


MODP8192 = {"libreswan": "aes_gcm256-sha2_512-modp8192",
            "strongswan": "aes256gcm16-prfsha512-modp8192",
            "openiked": "ikesa enc aes-256-gcm prf hmac-sha2-512 group modp8192"}
FAILURES = {
    "NO_PROPOSAL_CHOSEN": lambda peer: {"ike": MODP8192[peer]},
    "AUTHENTICATION_FAILED": lambda peer: {"psk": "a-different-pre-shared-key-entirely"},
    "TS_UNACCEPTABLE": lambda peer: {"remote_net": "10.50.0.0/24"},
}


# The lifecycle rows (rows.run_lifecycle_row: rekeys started by each side, delete both ways,
# DPD) run on one suite per peer that its matrix rows proved, so that they test the lifecycle,
# not the suite again.
LIFECYCLE_SUITE = {
    "libreswan": {"ike": "aes_gcm256-sha2_512-dh19", "esp": "aes_gcm256", "extra": "esn=no"},
    "strongswan": {"ike": "aes256gcm16-prfsha512-ecp256", "esp": "aes256gcm16"},
    "openiked": {"ike": "ikesa enc aes-256-gcm prf hmac-sha2-256 group ecp256",
                 "esp": "childsa enc aes-256 auth hmac-sha2-384"},
}
LIFECYCLE = {
    "rekey by ocfpy": "CHILD_SA + IKE_SA rekey started by ocfpy, delete by the peer",
    "rekey by the peer": "CHILD_SA + IKE_SA rekey started by the peer, delete by ocfpy",
    "DPD": "DPD: the peer dies, ocfpy declares it dead",
}


def rows_for(peer: str, matrix: list) -> list[Row]:
    rows = [Row(ZERO_CONFIG, role, "zero-config") for role in ROLES]
    for i, (label, ike, esp, opts, impossible) in enumerate(matrix):
        rows.append(Row(label, ROLES[i % 2], "matrix", ike, esp, opts, impossible))
    rows += [Row(label, "ocfpy initiates", kind, peer=LIFECYCLE_SUITE[peer])
             for kind, label in LIFECYCLE.items()]
    rows += [Row(f"failure: {kind}", "peer initiates", kind, peer=make(peer))
             for kind, make in FAILURES.items()]
    return rows


def userspace_rows(matrix: list) -> list[Row]:
    """ocfpy's userspace dataplane against a peer's kernel ESP: zero-config both roles and a
    few matrix rows (an AEAD, CBC+HMAC, ESN), enough for the other dataplane to meet a
    foreign kernel without repeating every suite the xfrm rows prove."""
    rows = [Row(ZERO_CONFIG, role, "zero-config") for role in ROLES]
    for i, (label, ike, esp, opts, impossible) in enumerate(matrix):
        rows.append(Row(label, ROLES[i % 2], "matrix", ike, esp, opts, impossible))
    return rows


ROWS = {"libreswan/userspace": userspace_rows([LIBRESWAN[0], LIBRESWAN[3], LIBRESWAN[8]]),
        "libreswan": rows_for("libreswan", LIBRESWAN),
        "openiked": rows_for("openiked", OPENIKED),
        "strongswan": rows_for("strongswan", STRONGSWAN)}


def cases(kind: str) -> list[tuple[str, Row]]:
    """(peer, row) pairs of one kind: "zero-config", "matrix", "lifecycle" or "failure"."""
    def want(row: Row) -> bool:
        if kind == "lifecycle":
            return row.kind in LIFECYCLE
        return row.kind == kind or (kind == "failure" and row.kind in FAILURES)
    return [(peer, row) for peer, rows in ROWS.items() for row in rows if want(row)]
