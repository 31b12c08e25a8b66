"""Render docs/algorithms.md from the catalogue (tests/kat/test_algorithms_doc.py keeps them equal).

Run from the repository root:  (cd tests && ../.venv/bin/python -m kat.make_algorithms_doc)
"""

from __future__ import annotations

from pathlib import Path

from ocfpy.crypto.catalogue import ALIASES, Primitive, Transform, all_transforms

DOC = Path(__file__).resolve().parents[2] / "docs" / "algorithms.md"

HEADER = """\
# Algorithms

Every algorithm ocfpy knows, named by its strongSwan proposal keyword (the name used by the
API, the configuration file, the CLI and the benchmark) and mapped one-to-one to its IANA
IKEv2 transform. This page is generated from `ocfpy/crypto/catalogue.py` by
`tests/kat/make_algorithms_doc.py`; a test fails if the two disagree. `ocfpy algorithms`
prints the same table.

Sizes are in bytes. *key* is the cipher, MAC or PRF key (the preferred length for PRFs, which
take any length); *salt* is the keying material after the key (the RFC 4106 / RFC 7634 salt,
the RFC 3686 nonce), so a session opens with *key + salt* bytes, exactly what IKE's KEYMAT
yields; *IV* is the explicit IV carried per packet; *ICV* is the AEAD tag or the truncated MAC;
*output* is the PRF or hash output, or for key exchange the shared secret; *public* is the
KE payload data length.

Every algorithm with a computation has known-answer tests: at admission (`ocfpy/crypto/selftest.py`,
vectors in `ocfpy/crypto/selftest_vectors/`) and in the KAT suite (`tests/kat/`).
"""

_SECTIONS = [
    (Primitive.AEAD, "AEAD (ENCR, combined mode)"),
    (Primitive.CIPHER, "Ciphers (ENCR)"),
    (Primitive.INTEG, "Integrity (INTEG)"),
    (Primitive.PRF, "Pseudo-random functions (PRF)"),
    (Primitive.KE, "Key exchange (KE)"),
    (Primitive.FLAG, "Extended sequence numbers (ESN)"),
    (Primitive.HASH, "Hashes (no IKEv2 transform; NAT detection, signatures)"),
]


def _ike(t: Transform) -> str:
    if t.ike_id is None:
        return "-"
    ttype, tid, bits = t.ike_id
    return f"{ttype.name} {tid}" + (f", key length {bits}" if bits else "")


def _n(value: int) -> str:
    return str(value) if value else "-"


def render() -> str:
    lines = [HEADER]
    for primitive, title in _SECTIONS:
        rows = [t for t in all_transforms() if t.primitive is primitive]
        lines += [f"## {title}", ""]
        if primitive is Primitive.KE:
            lines += ["| keyword | IKEv2 transform | group | public | output | description | RFC |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            lines += [f"| `{t.keyword}` | {_ike(t)} | {t.group} | {t.public_size} | "
                      f"{t.output_size} | {t.description} | {t.rfc} |" for t in rows]
        else:
            lines += ["| keyword | IKEv2 transform | key | salt | IV | ICV | output | "
                      "description | RFC |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            lines += [f"| `{t.keyword}` | {_ike(t)} | {_n(t.key_size)} | {_n(t.salt_size)} | "
                      f"{_n(t.iv_size)} | {_n(t.icv_size)} | {_n(t.output_size)} | "
                      f"{t.description} | {t.rfc or '-'} |" for t in rows]
        lines.append("")
    lines += ["## Aliases", "", "strongSwan accepts these spellings too; they name the same "
              "transforms.", "", "| alias | keyword |", "| --- | --- |"]
    lines += [f"| `{alias}` | `{keyword}` |" for alias, keyword in sorted(ALIASES.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
