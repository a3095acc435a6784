#!/usr/bin/env python3
"""Run the chapters as a learner does on Kaggle or Colab: each in a fresh kernel, from a working folder outside
the repository, in an environment where distrinews is *not* installed, so that the chapter's own install cell has
to install it. Nothing is written back to the notebooks.

    python tools/run_chapters.py --workdir /tmp/w --spec dist/distrinews-0.1.0-py3-none-any.whl --fresh
    python tools/run_chapters.py --workdir /tmp/w --spec dist/distrinews-*.whl --colab nbs/03_ddp.ipynb

Run it with the Python of the environment to test (it needs execnb there, and torch and the package's
dependencies if pip is to find them installed). Options:

* `--spec`: what the install cells install (sets `DISTRINEWS_PIP_SPEC`, which they read; default: GitHub).
* `--fresh`: `pip uninstall distrinews` before each chapter, so every chapter must install it itself; a chapter
  that imports distrinews before its install cell fails here.
* `--colab`: the kernel looks like Colab's to `accelerate.notebook_launcher` (its class lives in a
  `google.colab` module, which is what accelerate tests), so a launch with fewer than 2 GPUs runs the function
  once in the kernel's own process, as on Colab.

Cells run as `nbdev_test` runs them: `#| eval: false`, `nbdev_export()` and cells flagged with `--skip-flags`
(default: the `tst_flags` of settings.ini, `notest slow cuda`) are skipped.
"""
from __future__ import annotations
import argparse, os, shutil, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_notebooks import NBS, notebooks, skipped   # noqa: E402  (how cells are chosen, in one place)


def colab_shell(path: Path):
    "An execnb shell whose class `accelerate.notebook_launcher` takes for Colab's (`'google.colab' in str(get_ipython())`)."
    from execnb.shell import CaptureShell
    Shell = type("Shell", (CaptureShell,), {"__module__": "google.colab._shell"})
    return Shell(path)


def run_chapter(src: Path, workdir: Path, flags: set[str], colab: bool) -> tuple[bool, float, str]:
    "Run the copy of `src` under `workdir` in a new shell with cwd = its folder: (ok, seconds, error)."
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    path = workdir / src.relative_to(NBS)
    nb = read_nb(path)
    shell = colab_shell(path) if colab else CaptureShell(path)
    t = time.time()
    try:
        with working_directory(path.parent): shell.run_all(nb, exc_stop=True, preproc=lambda c: skipped(c, flags))
    except Exception:
        return False, time.time() - t, shell.prettytb(fname=path)
    return True, time.time() - t, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run chapters in fresh kernels, outside the repository, as on Kaggle/Colab.")
    ap.add_argument("notebooks", nargs="*", help="chapters to run (default: every numbered chapter)")
    ap.add_argument("--workdir", required=True, help="folder outside the repository; nbs/ is copied there")
    ap.add_argument("--spec", help="what the install cells install (DISTRINEWS_PIP_SPEC), e.g. a wheel's path")
    ap.add_argument("--fresh", action="store_true", help="uninstall distrinews before each chapter")
    ap.add_argument("--colab", action="store_true", help="launch as on Colab: the function once, in the kernel")
    ap.add_argument("--skip-flags", nargs="*", default=["notest", "slow", "cuda"])
    ap.add_argument("--one", help=argparse.SUPPRESS)   # internal: run this copied chapter in this (new) process
    args = ap.parse_args(argv)
    if args.one:                                        # the fresh kernel itself
        ok, secs, err = run_chapter(NBS / args.one, Path(args.workdir), set(args.skip_flags), args.colab)
        if not ok: print(err, file=sys.stderr)
        return 0 if ok else 1
    work = Path(args.workdir).resolve()
    if NBS.parent in (work, *work.parents): raise SystemExit("run_chapters: --workdir must be outside the repository")
    if work.exists(): shutil.rmtree(work)
    shutil.copytree(NBS, work, ignore=shutil.ignore_patterns("_proc", ".ipynb_checkpoints", "runs"))
    if args.spec: os.environ["DISTRINEWS_PIP_SPEC"] = str(Path(args.spec).resolve()) if Path(args.spec).exists() else args.spec
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ["IN_TEST"] = "1"       # as nbdev_test sets it
    # The kernels run in *this* environment: a VIRTUAL_ENV left over from the caller's shell would make IPython add that
    # environment's site-packages to sys.path (its "Attempting to work in a virtualenv" hack), and a chapter could then
    # import a distrinews installed there instead of the one its own install cell put here.
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    chapters = [p for p in notebooks(args.notebooks) if p.name[:1].isdigit()]
    failed = []
    for p in chapters:
        if args.fresh:
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "distrinews"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('distrinews') is None)"],
                                   capture_output=True, text=True, cwd=work, env=env)
            if probe.stdout.strip() != "True": raise SystemExit("run_chapters: distrinews is still importable after uninstalling it")
        t = time.time()       # a new process per chapter: nothing imported by the last one survives
        r = subprocess.run([sys.executable, __file__, "--workdir", str(work), "--one", str(p.relative_to(NBS)),
                            "--skip-flags", *args.skip_flags, *(["--colab"] if args.colab else [])], cwd=work, env=env)
        mode = "colab" if args.colab else "fresh" if args.fresh else "kernel"
        print(f"{'ok  ' if r.returncode == 0 else 'FAIL'} {p.name} ({mode}) in {time.time() - t:.0f}s", flush=True)
        if r.returncode: failed.append(p.name)
    if failed: print(f"run_chapters: {len(failed)} of {len(chapters)} chapters failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__": sys.exit(main())
