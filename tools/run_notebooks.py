#!/usr/bin/env python3
"""Re-execute the notebooks in place and save their outputs, so GitHub and the site show what each cell printed
and drew. Run it from anywhere in the repository before committing notebooks:

    python tools/run_notebooks.py                       # every notebook of nbs/ (numbered chapters and index)
    python tools/run_notebooks.py nbs/04_trainer.ipynb  # one (or a few) notebooks
    python tools/run_notebooks.py --skip-flags cuda slow

Each notebook runs in a fresh Jupyter kernel (ipykernel through nbclient, cwd = the notebook's folder), the kernel
Kaggle, Colab and a laptop's Jupyter run, so the launched ranks' prints appear under the launch cell as a learner
sees them. Cells run as "Run All" runs them: nbdev's directives (`#| eval: false`, `slow`, `notest`) mean nothing to
a kernel, so every cell runs except those flagged with `--skip-flags` (default: `cuda`, the cells that need a GPU
this machine may not have). Skipped cells keep the outputs they had (e.g. from a run on Kaggle). Progress bars are
off (`TQDM_DISABLE=1` and the Hugging Face switches): a run reports one line per event, text that GitHub and the site
can show (a progress widget has no saved state there).
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
    "Whether `cell` is left out: not code, or flagged with one of `flags` (e.g. `cuda` on a machine without a GPU)."
    if cell.cell_type != "code": return True
    return bool(flags & directives(cell.source).keys())


# How `accelerate.notebook_launcher` recognises Colab: `"google.colab" in str(get_ipython())`. Run first in the kernel,
# this makes the real ipykernel shell look like Colab's, so a launch with fewer than 2 GPUs runs the function once, in
# the kernel's own process, as on Colab.
AS_COLAB = ("_ip = get_ipython(); _ip.__class__ = type('Shell', (type(_ip),), {'__module__': 'google.colab._shell'}); "
            "del _ip")


def run_in_kernel(nb, cwd: Path, skip=lambda cell: False, colab: bool = False, timeout: int | None = None,
                  kernel: str = "python3") -> None:
    """Execute `nb`'s cells in order in a fresh Jupyter kernel (ipykernel, started by nbclient, as Jupyter, Kaggle and
    Colab run notebooks) with cwd `cwd`, as Run All does: nbdev's directives mean nothing to the kernel, so every
    cell runs except those `skip` names. The first error raises `nbclient.exceptions.CellExecutionError`."""
    import nbformat
    from nbclient import NotebookClient
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=False, record_timing=False,
                            store_widget_state=False, resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel():
        if colab: client.execute_cell(nbformat.v4.new_code_cell(AS_COLAB), 0)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or skip(cell): continue
            cell.outputs, cell.execution_count = [], None   # a cell that now prints nothing must not keep old outputs
            client.execute_cell(cell, i)


def coalesce_streams(nb) -> None:
    "Join each run of stdout (or stderr) outputs of a cell into one output, as Jupyter shows them."
    for cell in nb.cells:
        outs = []
        for o in cell.get("outputs", []):
            if o.output_type == "stream" and outs and outs[-1].output_type == "stream" and outs[-1].name == o.name:
                outs[-1].text += o.text
            else: outs.append(o)
        if cell.cell_type == "code": cell.outputs = outs


def error_text(e: Exception) -> str:
    "What a failed cell printed, without the ANSI colours."
    return re.sub(r"\x1b\[[0-9;]*m", "", str(e))


def run_notebook(path: Path, flags: set[str], timeout: int | None = None) -> bool:
    "Execute `path` in a fresh kernel with cwd = its folder; write it back with outputs if every cell ran."
    import nbformat
    nb = nbformat.read(path, as_version=4)
    t = time.time()
    try: run_in_kernel(nb, path.parent, lambda c: skipped(c, flags), timeout=timeout)
    except Exception as e:
        sys.stderr.write(error_text(e) + "\n")
        print(f"FAILED {path.relative_to(ROOT)} after {time.time() - t:.0f}s: left unchanged", file=sys.stderr)
        return False
    coalesce_streams(nb)
    nbformat.write(nb, path)
    from fastcore.xtras import working_directory
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
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.pop("IN_TEST", None)   # a real run, not a test run
    ok = [run_notebook(p, set(args.skip_flags), args.timeout) for p in notebooks(args.notebooks)]
    return 0 if all(ok) else 1


if __name__ == "__main__": sys.exit(main())
