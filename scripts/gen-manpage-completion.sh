#!/usr/bin/env bash
# Regenerate the man page and the shell completions of `ocfpy` from its argument parser
# (ocfpy.cli.main.build_parser), into packaging/, from where setup.py's data_files install
# them: share/man/man1/ocfpy.1, share/bash-completion/completions/ocfpy and
# share/zsh/site-functions/_ocfpy under the install prefix (/usr/local for a system-wide pip,
# where man and bash-completion look by default; the venv for a venv).
# Rerun after changing any subcommand's options; tests/unit/test_manpage.py fails while the
# committed files differ from what this produces.
#   bash scripts/gen-manpage-completion.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=packaging
CHECK=0
[ "${1:-}" = "--check" ] && { CHECK=1; OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT; }
mkdir -p "$OUT/completions"
VERSION=$("$PY" -c 'import ocfpy; print(ocfpy.__version__)')
# The date in .TH comes from SOURCE_DATE_EPOCH: fixed, so that regenerating changes nothing
# unless the parser did (the version's release date would be better; there is none yet).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}  # 2026-01-01
"$PY" -c "import sys; from argparse_manpage.cli import main; sys.argv[0] = 'argparse-manpage'; sys.exit(main())" --module ocfpy.cli.main --function build_parser \
    --project-name ocfpy --prog ocfpy --version "$VERSION" \
    --description "an OCF-style crypto framework with an IKEv2 daemon and an ESP dataplane" \
    --author "the ocfpy authors" --manual-title "ocfpy manual" \
    --output "$OUT/ocfpy.1"
"$PY" -c 'import shtab, sys
from ocfpy.cli.main import build_parser
p = build_parser()
open(sys.argv[1], "w").write(shtab.complete(p, shell="bash"))
open(sys.argv[2], "w").write(shtab.complete(p, shell="zsh"))' "$OUT/completions/ocfpy" "$OUT/completions/_ocfpy"
bash -n "$OUT/completions/ocfpy"
if [ "$CHECK" = 1 ]; then
    diff -ru packaging/ocfpy.1 "$OUT/ocfpy.1" && diff -ru packaging/completions "$OUT/completions" \
        || { echo "gen-manpage-completion: packaging/ is stale: run scripts/gen-manpage-completion.sh" >&2; exit 1; }
    echo "gen-manpage-completion: up to date"
else
    echo "gen-manpage-completion: wrote packaging/ocfpy.1, packaging/completions/{ocfpy,_ocfpy}"
fi
