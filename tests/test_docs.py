"""The documentation site builds with `mkdocs build --strict` (a broken link or anchor, a page missing from the
navigation or a stale include fails it), and its generated reference tables cover the code: every option of the
config dataclasses, every registered objective and family."""
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from models.family import FAMILIES
from objectives import OBJECTIVES
from pretrain.compare.config import CompareConfig
from pretrain.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def hook():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "docs/hooks/config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mkdocs_build_strict(tmp_path):
    """Needs the docs extra (pip install -e '.[docs]'), which CI and the README's test command install."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # Material's banner about MkDocs 2
    # no --quiet: it hides the warnings from the counter that --strict aborts on
    failed = done.returncode != 0 or re.search(r"^WARNING\s+-", done.stderr, re.M)
    assert not failed, done.stderr[-3000:] + "\n(install the docs extra: pip install -e '.[docs]')"
    assert (tmp_path / "site" / "config-reference" / "index.html").is_file()


def test_config_reference_lists_every_option():
    page = hook().config_reference()
    for section in dataclasses.fields(TrainConfig):
        for f in dataclasses.fields(section.type if dataclasses.is_dataclass(section.type)
                                    else getattr(TrainConfig(), section.name)):
            assert f"`{section.name}.{f.name}`" in page, f"{section.name}.{f.name} missing from the reference"
    compare = hook().compare_reference()
    for f in dataclasses.fields(CompareConfig):
        assert f"`{f.name}`" in compare, f.name


def shipped_objectives() -> list[str]:
    """The objectives the project ships (other test files register toy ones in the same process)."""
    return sorted(name for name, cls in OBJECTIVES.items() if cls.__module__.startswith("objectives."))


def shipped_families() -> list[str]:
    return sorted(name for name, family in FAMILIES.items() if family.init.__module__.startswith("models."))


def test_objective_and_family_tables_list_every_registered_one():
    objectives, families = hook().objectives_reference(), hook().families_reference()
    assert "hybrid" in shipped_objectives() and "modernbert" in shipped_families()
    assert all(f"`{name}`" in objectives for name in shipped_objectives()), shipped_objectives()
    assert all(f"`{name}`" in families for name in shipped_families()), shipped_families()
