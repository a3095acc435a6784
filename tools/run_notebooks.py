#!/usr/bin/env python3
"""Re-execute the notebooks in place and save their outputs, so GitHub and the site show what each cell printed
and drew. Run it from anywhere in the repository before committing notebooks:

    python tools/run_notebooks.py                       # every notebook of nbs/ (numbered chapters and index)
    python tools/run_notebooks.py nbs/04_trainer.ipynb  # one (or a few) notebooks
    python tools/run_notebooks.py --skip-flags cuda slow

Cells run the way `nbdev_test` runs them (execnb's CaptureShell, cwd = the notebook's folder, `#| eval: false`
cells and `nbdev_export()` calls skipped), except that only cells flagged with `--skip-flags` (default: `cuda`,
the cells that need a GPU this machine may not have) are skipped: `slow` and `notest` cells run, because their
outputs are what a reader wants to see. Skipped cells keep the outputs they had (e.g. from a run on Kaggle).
An executed cell's old outputs are replaced, also by nothing. The first error stops that notebook, which is
then left unchanged. Afterwards `nbdev_clean` strips metadata (it keeps outputs); outputs need not be
byte-identical from run to run, CI only checks that notebooks are clean (.ci/run) and what they show
(tests/test_notebooks.py).
"""
from __future__ import annotations
import argparse, os, re, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
_DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+):?\s*(.*?)\s*$")


def directives(source: str) -> dict[str, str]:
    "The `#| key: value` directives at the top of a cell, as nbdev reads them."
    out = {}
    for line in source.splitlines():
        if not line.strip(): continue
        m = _DIRECTIVE.match(line)
        if not m: break
        out[m.group(1)] = m.group(2)
    return out


def skipped(cell, flags: set[str]) -> bool:
    "Whether `cell` is not executed: not code, `#| eval: false`, an `nbdev_export()` call, or flagged with `flags`."
    if cell.cell_type != "code": return True
    if "nbdev_export" + "(" in cell.source: return True
    d = directives(cell.source)
    return d.get("eval", "").lower() == "false" or bool(flags & d.keys())


def run_notebook(path: Path, flags: set[str], timeout: int | None = None) -> bool:
    "Execute `path` in a fresh shell with cwd = its folder; write it back with outputs if every cell ran."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    nb = read_nb(path)
    def pre(cell):
        if skipped(cell, flags): return True
        cell.outputs = []          # a cell that now prints nothing must not keep what it printed before
        cell.execution_count = None
        return False
    shell = CaptureShell(path)
    if timeout: shell.timeout = timeout
    t = time.time()
    try:
        with working_directory(path.parent): shell.run_all(nb, exc_stop=True, preproc=pre)
    except Exception:
        sys.stderr.write(shell.prettytb(fname=path) + "\n")
        print(f"FAILED {path.relative_to(ROOT)} after {time.time() - t:.0f}s: left unchanged", file=sys.stderr)
        return False
    write_nb(nb, path)
    from nbdev.clean import nbdev_clean
    with working_directory(ROOT): nbdev_clean(fname=str(path))   # metadata only: outputs stay
    print(f"ran {path.relative_to(ROOT)} in {time.time() - t:.0f}s")
    return True


def notebooks(names: list[str]) -> list[Path]:
    "The notebooks named (paths from the repository root or from nbs/), or every notebook of nbs/."
    if not names:
        return sorted(p for p in NBS.rglob("*.ipynb") if not any(s.startswith(("_", ".")) for s in p.relative_to(NBS).parts))
    out = []
    for n in names:
        p = next((c for c in (Path(n), ROOT / n, NBS / n) if c.is_file()), None)
        if p is None: raise SystemExit(f"run_notebooks: error: {n}: no such notebook")
        out.append(p.resolve())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Re-execute notebooks in place and save their outputs.")
    ap.add_argument("notebooks", nargs="*", help="notebooks to run (default: all of nbs/)")
    ap.add_argument("--skip-flags", nargs="*", default=["cuda"], help="cell flags to skip (default: cuda)")
    ap.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: none)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # one line per result, not a progress bar per map/load/save (Hub and transformers bars; datasets bars)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.pop("IN_TEST", None)   # a real run, not a test run
    ok = [run_notebook(p, set(args.skip_flags), args.timeout) for p in notebooks(args.notebooks)]
    return 0 if all(ok) else 1


if __name__ == "__main__": sys.exit(main())
