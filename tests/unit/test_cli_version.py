"""`ocfpy --version`, `python -m ocfpy`, and -v before or after the subcommand."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import ocfpy
from ocfpy.cli.main import build_parser, main, verbosity


def test_version_is_defined_once():
    # pyproject's version is dynamic from ocfpy.__version__: the installed metadata agrees
    assert importlib.metadata.version("ocfpy") == ocfpy.__version__


def test_version_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"ocfpy {ocfpy.__version__}\n"


def test_python_dash_m_ocfpy():
    r = subprocess.run([sys.executable, "-m", "ocfpy", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == f"ocfpy {ocfpy.__version__}\n", r.stderr
    r = subprocess.run([sys.executable, "-m", "ocfpy", "no-such-command"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.parametrize("argv, expected", [
    (["drivers"], 0),
    (["-v", "drivers"], 1),
    (["drivers", "-v"], 1),
    (["drivers", "-vv"], 2),
    (["-v", "drivers", "-v"], 2),
    (["--verbose", "algorithms", "--verbose"], 2),
])
def test_verbose_before_or_after_the_command(argv, expected):
    assert verbosity(build_parser().parse_args(argv)) == expected


def test_verbose_after_a_nested_command():
    parser = build_parser()
    nested = None
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, child in action.choices.items():
                for a in child._actions:
                    if hasattr(a, "choices") and isinstance(a.choices, dict) and a.choices:
                        nested = [name, next(iter(a.choices))]
                        break
                if nested:
                    break
    assert nested, "no command with subcommands (bench, sa)"
    try:
        args = parser.parse_args(["-v", *nested, "-vv"])
    except SystemExit:  # the nested command needs arguments: -v is still accepted before them
        pytest.skip(f"{' '.join(nested)} needs arguments")
    assert verbosity(args) == 3
