#!/usr/bin/env python3
"""Run the chapters as a learner does on Kaggle or Colab: each in a fresh kernel, from a working folder outside
the repository, in an environment where distrinews is *not* installed, so that the chapter's own install cell has
to install it. Nothing is written back to the notebooks.

    python tools/run_chapters.py --workdir /tmp/w --spec dist/distrinews-0.1.0-py3-none-any.whl --fresh
    python tools/run_chapters.py --workdir /tmp/w --spec dist/distrinews-*.whl --colab nbs/03_ddp.ipynb

Each chapter runs in a fresh Jupyter kernel (ipykernel through nbclient: the kernel Kaggle and Colab run, with its
own event loop and threads, which is what a forking launcher meets there), as "Run All" runs it: nbdev's directives
mean nothing to a kernel, so every cell runs except those flagged with `--skip-flags` (default: `cuda`, the cells
that need a GPU). Run it with the Python of the environment to test (it needs nbclient and ipykernel there, and
torch and the package's dependencies if pip is to find them installed). Options:

* `--spec`: what the install cells install (sets `DISTRINEWS_PIP_SPEC`, which they read; default: GitHub).
* `--fresh`: `pip uninstall distrinews` before each chapter, so every chapter must install it itself; a chapter
  that imports distrinews before its install cell fails here.
* `--colab`: the kernel looks like Colab's to `accelerate.notebook_launcher` (`"google.colab" in str(get_ipython())`,
  which is what accelerate tests), so a launch with fewer than 2 GPUs runs the function once in the kernel's own
  process, as on Colab.
"""
from __future__ import annotations
import argparse, os, shutil, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_notebooks import NBS, error_text, notebooks, run_in_kernel, skipped   # noqa: E402  (how cells run, in one place)


def run_chapter(src: Path, workdir: Path, flags: set[str], colab: bool) -> tuple[bool, float, str]:
    "Run the copy of `src` under `workdir` in a fresh kernel with cwd = its folder: (ok, seconds, error)."
    import nbformat
    path = workdir / src.relative_to(NBS)
    nb = nbformat.read(path, as_version=4)
    t = time.time()
    try: run_in_kernel(nb, path.parent, lambda c: skipped(c, flags), colab=colab)
    except Exception as e: return False, time.time() - t, error_text(e)
    return True, time.time() - t, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run chapters in fresh kernels, outside the repository, as on Kaggle/Colab.")
    ap.add_argument("notebooks", nargs="*", help="chapters to run (default: every numbered chapter)")
    ap.add_argument("--workdir", required=True, help="folder outside the repository; nbs/ is copied there")
    ap.add_argument("--spec", help="what the install cells install (DISTRINEWS_PIP_SPEC), e.g. a wheel's path")
    ap.add_argument("--fresh", action="store_true", help="uninstall distrinews before each chapter")
    ap.add_argument("--colab", action="store_true", help="launch as on Colab: the function once, in the kernel")
    ap.add_argument("--skip-flags", nargs="*", default=["cuda"], help="cell flags to skip (default: cuda)")
    args = ap.parse_args(argv)
    work = Path(args.workdir).resolve()
    if NBS.parent in (work, *work.parents): raise SystemExit("run_chapters: --workdir must be outside the repository")
    if work.exists(): shutil.rmtree(work)
    shutil.copytree(NBS, work, ignore=shutil.ignore_patterns("_proc", ".ipynb_checkpoints", "runs"))
    if args.spec: os.environ["DISTRINEWS_PIP_SPEC"] = str(Path(args.spec).resolve()) if Path(args.spec).exists() else args.spec
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")   # progress as text lines, not widgets nobody sees
    # The kernels run in *this* environment: a VIRTUAL_ENV left over from the caller's shell would make IPython add that
    # environment's site-packages to sys.path (its "Attempting to work in a virtualenv" hack), and a chapter could then
    # import a distrinews installed there instead of the one its own install cell put here.
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    os.environ.update(env)            # the kernels inherit it
    chapters = [p for p in notebooks(args.notebooks) if p.name[:1].isdigit()]
    failed = []
    for p in chapters:
        if args.fresh:
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "distrinews"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('distrinews') is None)"],
                                   capture_output=True, text=True, cwd=work, env=env)
            if probe.stdout.strip() != "True": raise SystemExit("run_chapters: distrinews is still importable after uninstalling it")
        ok, secs, err = run_chapter(p, work, set(args.skip_flags), args.colab)   # a new kernel per chapter
        if not ok: print(err, file=sys.stderr)
        mode = "colab" if args.colab else "fresh" if args.fresh else "kernel"
        print(f"{'ok  ' if ok else 'FAIL'} {p.name} ({mode}) in {secs:.0f}s", flush=True)
        if not ok: failed.append(p.name)
    if failed: print(f"run_chapters: {len(failed)} of {len(chapters)} chapters failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__": sys.exit(main())
