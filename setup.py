"""Maps the in-tree backends into one distribution.

The repository keeps the framework (ocfpy/), the software backends (plugins/)
and the accelerator drivers (drivers/) in separate top-level folders, so that
no layer can reach into another by a relative import. Installed, they become
ocfpy, ocfpy.plugins and ocfpy.drivers. Metadata lives in pyproject.toml.
"""

from setuptools import Extension, find_packages, setup

LAYOUT = {"ocfpy": "ocfpy", "ocfpy.plugins": "plugins", "ocfpy.drivers": "drivers"}


def _packages() -> list[str]:
    packages = []
    for name, folder in LAYOUT.items():
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(folder)]
    return packages


setup(
    packages=_packages(),
    # The userspace dataplane's compiled helpers, each optional and each with a pure-Python
    # twin that OCFPY_PURE_PYTHON=1 forces. The checksum of segments cut from TCP
    # super-packets (ocfpy/esp/_csum.c): optional, so a machine without a C compiler still
    # installs, and ocfpy/esp/offload.py falls back to the pure-Python sum (same result).
    # The ESP framing around each packet's AEAD call (ocfpy/esp/_framing.c) is built the same
    # way: ocfpy/esp/framing.py falls back to its pure-Python twin (same bytes); so is the
    # batched send (ocfpy/esp/_mmsg.c, sendmmsg): ocfpy/esp/sendbatch.py falls back to sendto.
    ext_modules=[Extension("ocfpy.esp._csum", ["ocfpy/esp/_csum.c"], optional=True),
                 Extension("ocfpy.esp._framing", ["ocfpy/esp/_framing.c"], optional=True),
                 Extension("ocfpy.esp._mmsg", ["ocfpy/esp/_mmsg.c"], optional=True)],
    package_dir=LAYOUT,
    # ocfpy-iked.service: the systemd unit, installed with the package (pip cannot put it in
    # /etc/systemd/system); `python -m ocfpy.iked.systemd unit` prints it for this install.
    package_data={"ocfpy": ["py.typed"], "ocfpy.crypto": ["selftest_vectors/*.json"],
                  "ocfpy.iked": ["ocfpy-iked.service"]},
    # Generated from the argument parser by scripts/gen-manpage-completion.sh (committed, and
    # tests/unit/test_manpage.py fails when stale). Paths are relative to the install prefix:
    # /usr/local for a system-wide pip, where man(1) and bash-completion look by default.
    data_files=[
        ("share/man/man1", ["packaging/ocfpy.1"]),
        ("share/bash-completion/completions", ["packaging/completions/ocfpy"]),
        ("share/zsh/site-functions", ["packaging/completions/_ocfpy"]),
    ],
)
