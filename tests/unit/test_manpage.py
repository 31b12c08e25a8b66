"""The man page and shell completions generated from the argument parser
(scripts/gen-manpage-completion.sh -> packaging/, installed by setup.py's data_files)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocfpy.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "packaging" / "ocfpy.1"
BASH = ROOT / "packaging" / "completions" / "ocfpy"
ZSH = ROOT / "packaging" / "completions" / "_ocfpy"


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """Every (sub)command path of the parser: ("sa",), ("sa", "list"), ..."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out.append(prefix + (name,))
                out += _commands(child, prefix + (name,))
    return out


def test_the_man_page_names_every_subcommand():
    text = MAN.read_text(encoding="utf-8")
    commands = _commands(build_parser())
    assert len(commands) >= 7  # drivers, algorithms, devices, bench, iked, sa, demo at least
    missing = [" ".join(c) for c in commands
               if f"'ocfpy {' '.join(c)}'" not in text.replace("\\-", "-")]
    assert missing == [], f"not in packaging/ocfpy.1 (rerun scripts/gen-manpage-completion.sh): {missing}"
    assert text.startswith('.TH OCFPY "1"')
    assert "\\-\\-version" in text or "--version" in text


def test_bash_completion_parses_and_completes_the_subcommands():
    r = subprocess.run(["bash", "-n", str(BASH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    script = (f"source {BASH}; COMP_WORDS=(ocfpy ''); COMP_CWORD=1; COMP_LINE='ocfpy '; "
              "COMP_POINT=6; _shtab_ocfpy; printf '%s\\n' \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    offered = set(r.stdout.split())
    top = {c[0] for c in _commands(build_parser())}
    assert top <= offered, top - offered


def test_zsh_completion_parses():
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh not installed")
    r = subprocess.run([zsh, "-n", str(ZSH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_committed_files_are_what_the_parser_generates():
    for mod in ("argparse_manpage", "shtab"):
        if importlib.util.find_spec(mod) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{mod} missing in CI: it is in the test extra")
            pytest.skip(f"{mod} not installed (pip install -e '.[test]')")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gen-manpage-completion.sh"), "--check"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr


def test_systemd_unit_documentation_points_at_this_page(tmp_path):
    """Documentation=man:ocfpy(1) resolves once the page is installed."""
    tool, man = shutil.which("systemd-analyze"), shutil.which("man")
    if tool is None or man is None:
        pytest.skip("systemd-analyze or man not installed")
    from ocfpy.iked.systemd import unit_text

    (tmp_path / "man" / "man1").mkdir(parents=True)
    shutil.copy(MAN, tmp_path / "man" / "man1" / "ocfpy.1")
    unit = tmp_path / "ocfpy-iked.service"
    unit.write_text(unit_text(executable=str(Path(sys.executable).parent / "ocfpy")))
    r = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANPATH": str(tmp_path / "man")})
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
