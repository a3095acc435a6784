"The package's shape: layers import one way, the trainer does not know FSDP, strategies share one face, modules stay small."
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "distrinews"
# the chapters' order: a module may import only from modules before it (at the top or inside a function)
LAYERS = ["config", "data", "model", "ddp", "loop", "run", "fsdp", "checkpoint", "train", "loader", "api", "bench", "servebench", "cli"]


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
    for module in ("loop", "run", "checkpoint", "train"):   # FSDP plugs in by name (train.STRATEGY_CLASSES)
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


NBS = PKG.parent / "nbs"


def _cell_tree(src: str):
    "The AST of a code cell, its `!shell`/`%magic` lines blanked (None if it still does not parse)."
    try: return ast.parse("\n".join("" if l.lstrip().startswith(("!", "%")) else l for l in src.splitlines()))
    except SyntaxError: return None


def chapter_defs() -> tuple[list[str], dict[tuple[str, str], str]]:
    "The chapters in reading order (file-name order), and (module, name) -> the chapter whose export cells define it."
    import json
    order, where = [], {}
    for p in sorted(NBS.glob("[0-9]*.ipynb")):
        order.append(p.stem)
        cells = ["".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"]
        mod = next((l.split()[-1] for s in cells for l in s.splitlines() if l.startswith("#| default_exp")), None)
        for s in cells:
            if not s.startswith(("#| export", "#| exports")) or mod is None or (tree := _cell_tree(s)) is None: continue
            for n in tree.body:
                names = [n.name] if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else \
                        [t.id for t in getattr(n, "targets", [getattr(n, "target", None)]) if isinstance(t, ast.Name)]
                for name in names: where.setdefault((mod, name), p.stem)
    return order, where


def test_no_chapter_uses_a_later_chapter():
    "A learner reads the chapters in order: no chapter imports (and so calls) what a later chapter defines."
    import json
    order, where = chapter_defs()
    late = []
    for p in sorted(NBS.glob("[0-9]*.ipynb")):
        for c in json.loads(p.read_text())["cells"]:
            if c["cell_type"] != "code" or (tree := _cell_tree("".join(c["source"]))) is None: continue
            for n in ast.walk(tree):
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("distrinews."):
                    mod = n.module.split(".")[1]
                    for a in n.names:
                        src = where.get((mod, a.name))
                        if src and order.index(src) > order.index(p.stem): late.append(f"{p.stem} imports {mod}.{a.name} from {src}")
    assert not late, "; ".join(late)


def test_chapter_order_matches_the_site():
    "The sidebar lists every chapter, each once, in the reading order the test above checks (file-name order)."
    side = [l.strip()[2:].removesuffix(".ipynb") for l in (NBS / "sidebar.yml").read_text().splitlines()
            if l.strip().startswith("- ") and l.strip()[2:3].isdigit()]
    assert side == [p.stem for p in sorted(NBS.glob("[0-9]*.ipynb"))], side
