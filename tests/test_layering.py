"""The layering, as pyproject.toml's import-linter contracts state it: models <- objectives <- pretrain; inside
pretrain cli > compare > downstream > export > train > inspect > data > shared pieces; no import circles in any
package. The contracts hold on the tree, and break when a forbidden import is added to a copy of it."""
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_contract():
    proc = lint(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("models/config.py", "import pretrain.errors", "the backbone knows no objective"),       # models -> pretrain
    ("objectives/mlm.py", "from pretrain.data import order", "the backbone knows no objective"),
    ("pretrain/data/packing.py", "from ..train import run_dir", "pretrain follows the data flow"),  # data -> train
    ("pretrain/train/run_dir.py", "from . import trainer", "no import circles"),          # trainer <-> run_dir
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    for name in ("models", "objectives", "pretrain"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # the forbidden import\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0, proc.stdout
    names = [c["name"] for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
             ["contracts"]]
    target = next(name for name in names if broken in name)
    assert f"{target} BROKEN" in " ".join(proc.stdout.split()), proc.stdout  # (an upward import is a circle too)
