"""Run one fuzz target under atheris (libFuzzer, coverage-guided).

    python -m tests.fuzz.run TARGET [libFuzzer flags...] [CORPUS_DIR...]

scripts/fuzz.sh and the `fuzz` stage of scripts/test.sh call this; they pass -runs /
-max_total_time, -artifact_prefix (where a crashing input is written) and the corpus folders
(a scratch folder first, so new inputs never land in the committed corpus). ocfpy is imported
inside atheris.instrument_imports() so libFuzzer sees its branch coverage.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1].startswith("-"):
        sys.exit("usage: python -m tests.fuzz.run TARGET [libFuzzer args]")
    name = argv[1]
    with atheris.instrument_imports(include=["ocfpy", "plugins", "drivers", "tomllib", "json"]):
        from tests.fuzz.harnesses import TARGETS, quiet_logging

        quiet_logging()
        if name not in TARGETS:
            sys.exit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
        target = TARGETS[name]()
    # libFuzzer gets argv[0] and its own flags; the target name is ours
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
