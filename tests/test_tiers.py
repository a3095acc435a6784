"""The quick tier (issue 31, item 7): `pytest -m "not slow"` leaves out the tests that start processes, every name
conftest.py marks exists, and the marker is registered (pyproject.toml), so `--strict-markers` accepts it."""
from __future__ import annotations
import ast, subprocess, sys
from pathlib import Path

import conftest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def test_every_slow_name_exists():
    for f in conftest.SLOW_FILES: assert (TESTS / f).is_file(), f"conftest.SLOW_FILES: no tests/{f}"
    for key in conftest.SLOW_TESTS:
        f, name = key.split("::")
        tree = ast.parse((TESTS / f).read_text(encoding="utf-8"))
        names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert name in names, f"conftest.SLOW_TESTS: tests/{f} has no {name} (renamed? update the list)"


def test_quick_tier_leaves_out_the_slow_tests():
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--strict-markers", "-m", "not slow",
                        "-p", "no:cacheprovider", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    quick = [l for l in r.stdout.splitlines() if "::" in l]
    assert quick and any(l.startswith("tests/test_config.py::") for l in quick)
    assert not [l for l in quick if l.split("::")[0].rsplit("/", 1)[-1] in conftest.SLOW_FILES]
    assert not [l for l in quick if "::".join([l.split("::")[0].rsplit("/", 1)[-1], l.split("::")[1].split("[")[0]]) in conftest.SLOW_TESTS]
