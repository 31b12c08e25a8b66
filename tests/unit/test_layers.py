"""The layering in docs/architecture.md, enforced: import-linter's contracts in pyproject.toml.

The first test runs the linter over the tree as it is. The others copy the tree, plant one
import that breaks one contract, and check that the linter fails and names the offending
import: a contract that cannot fail would protect nothing.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(),
                                reason="import-linter is not installed (pip install -e '.[test]')")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=300)
    # import-linter before 2.7 or so colours its report even into a pipe (what the resolver
    # picks under scripts/test-floors.sh's rich floor): read the text without the escapes.
    result.stdout = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    return result


def test_the_tree_keeps_every_contract() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture()
def scratch_tree(tmp_path: Path) -> Path:
    for folder in ("ocfpy", "plugins", "drivers"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(("module", "planted", "contract"), [
    ("ocfpy/crypto/stats.py", "import ocfpy.ike.engine", "framework imports no plugin"),
    ("ocfpy/esp/replay.py", "import ocfpy.ike.sa", "Layers"),
    ("ocfpy/ike/keys.py", "import socket", "sans-I/O"),
    ("ocfpy/ike/tasks/base.py", "import time", "sans-I/O"),
    ("plugins/openssl/hash.py", "import ocfpy.iked.daemon", "Plugins and drivers"),
    ("drivers/kernel_accel/transport.py", "import plugins.af_alg", "stands alone"),
])
def test_a_wrong_import_breaks_its_contract(scratch_tree: Path, module: str, planted: str,
                                            contract: str) -> None:
    path = scratch_tree / module
    path.write_text(path.read_text() + f"\n{planted}  # planted by test_layers\n")
    result = lint(scratch_tree)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
    planted_module = planted.split()[1]
    assert planted_module in result.stdout, result.stdout


def test_drivers_are_reached_only_through_entry_points() -> None:
    """Nothing in ocfpy/ imports a plugin or driver by its installed name (ocfpy.plugins.*,
    ocfpy.drivers.*): the registry finds them through the entry point group, as it finds a
    third party's. import-linter cannot see these names (they live in plugins/ and drivers/
    in the source tree), so this reads the imports itself."""
    offenders = []
    for path in (ROOT / "ocfpy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                if name.startswith(("ocfpy.plugins", "ocfpy.drivers")):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not offenders, offenders


@pytest.mark.parametrize("old", ["driver", "errors", "catalogue", "dispatcher"])
def test_the_0_1_import_paths_are_aliases_that_warn(old: str) -> None:
    """A driver written against 0.1 (`from ocfpy.driver import Driver`) keeps working and is
    told where the name went; the alias is the very module, so isinstance checks agree."""
    code = (f"import warnings, importlib\n"
            f"with warnings.catch_warnings(record=True) as seen:\n"
            f"    warnings.simplefilter('always')\n"
            f"    old = importlib.import_module('ocfpy.{old}')\n"
            f"new = importlib.import_module('ocfpy.crypto.{old}')\n"
            f"assert old is new, (old, new)\n"
            f"assert any('ocfpy.crypto.{old}' in str(w.message) for w in seen), seen\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_public_api_names_resolve() -> None:
    import ocfpy.crypto as api

    for name in api.__all__:
        assert getattr(api, name).__name__ == name


def test_the_architecture_doc_lists_every_layer_the_linter_checks() -> None:
    """docs/architecture.md's layer table, the folders under ocfpy/ and import-linter's layers
    contract name the same packages: a new layer cannot appear in one and not the others."""
    import re
    import tomllib

    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc[doc.index("| layer | package |"):]
    table = table[:table.index("\n\n")]
    documented = set(re.findall(r"^\| [^|]+ \| `ocfpy/(\w+)/`", table, re.M))
    folders = {p.parent.name for p in (ROOT / "ocfpy").glob("*/__init__.py")}
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["id"] == "layers")["layers"]
    linted = {name.removeprefix("ocfpy.") for name in layers}
    assert documented == folders == linted, (documented, folders, linted)


def test_the_architecture_doc_names_every_module_of_the_daemon() -> None:
    """docs/architecture.md's table of the daemon's parts and the modules in ocfpy/iked/ are
    the same set: a part added (or split off) without saying what it owns fails here."""
    import re

    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc[doc.index("| module | what it owns |"):]
    table = table[:table.index("\n\n")]
    documented = set(re.findall(r"^\| `(\w+)\.py` \|", table, re.M))
    modules = {p.stem for p in (ROOT / "ocfpy" / "iked").glob("*.py")} - {"__init__"}
    assert documented == modules, (sorted(documented - modules), sorted(modules - documented))
