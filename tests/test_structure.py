"The package's shape: layers import one way, the trainer does not know FSDP, strategies share one face, modules stay small."
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "distrinews"
# the chapters' order: a module may import only from modules before it (at the top or inside a function)
LAYERS = ["config", "data", "model", "ddp", "loop", "fsdp", "checkpoint", "train", "loader", "api", "bench", "servebench", "cli"]


def imported(module: str) -> set[str]:
    "The distrinews modules that `module` imports, anywhere in its source (`from .x import`, `from distrinews.x import`, `import distrinews.x`)."
    found = set()
    for n in ast.walk(ast.parse((PKG / f"{module}.py").read_text())):
        if isinstance(n, ast.ImportFrom):
            name = n.module or ""
            if n.level == 1: found.add(name.split(".")[0])
            elif name.startswith("distrinews."): found.add(name.split(".")[1])
        elif isinstance(n, ast.Import):
            found |= {a.name.split(".")[1] for a in n.names if a.name.startswith("distrinews.")}
    return found - {""}


def test_every_module_has_a_layer():
    assert sorted(LAYERS) == sorted(p.stem for p in PKG.glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("module", LAYERS)
def test_layers_import_one_way(module):
    later = set(LAYERS[LAYERS.index(module):])
    assert not imported(module) & later, f"{module} imports {sorted(imported(module) & later)}, which come after it"


def test_the_trainer_does_not_know_fsdp():
    for module in ("loop", "checkpoint", "train"):   # FSDP plugs in by name (train.STRATEGY_CLASSES)
        assert "fsdp" not in imported(module), module


def test_strategies_have_one_face():
    from distrinews.ddp import DDPStrategy
    from distrinews.fsdp import FSDPStrategy
    face = lambda cls: sorted(m for m in vars(cls) if not m.startswith("_"))
    assert face(DDPStrategy) == face(FSDPStrategy) == ["full_state_dict", "load", "name", "place", "save", "sharded", "sync", "wrap"]


@pytest.mark.parametrize("module", LAYERS)
def test_modules_stay_small(module):
    n = len((PKG / f"{module}.py").read_text().splitlines())
    assert n <= 510, f"{module}.py has {n} lines: split its chapter (the course keeps each module under ~500)"
