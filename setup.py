"""Maps the in-tree backends into one distribution.

The repository keeps the framework (ocfpy/), the software backends (plugins/)
and the accelerator drivers (drivers/) in separate top-level folders, so that
no layer can reach into another by a relative import. Installed, they become
ocfpy, ocfpy.plugins and ocfpy.drivers. Metadata lives in pyproject.toml.
"""

from setuptools import find_packages, setup

LAYOUT = {"ocfpy": "ocfpy", "ocfpy.plugins": "plugins", "ocfpy.drivers": "drivers"}


def _packages() -> list[str]:
    packages = []
    for name, folder in LAYOUT.items():
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(folder)]
    return packages


setup(
    packages=_packages(),
    package_dir=LAYOUT,
    # ocfpy-iked.service: the systemd unit, installed with the package (pip cannot put it in
    # /etc/systemd/system); `python -m ocfpy.iked.systemd unit` prints it for this install.
    package_data={"ocfpy.crypto": ["selftest_vectors/*.json"],
                  "ocfpy.iked": ["ocfpy-iked.service"]},
)
