"""What a learner sees in a real Jupyter kernel (ipykernel, as on Kaggle, Colab and a laptop), which execnb's
CaptureShell does not show: the launched ranks' lines under the launch cell, whole; no progress widget from a forked
rank; "Run All" through cells nbdev would skip; a running event loop."""
from __future__ import annotations
import asyncio, io, multiprocessing as mp, os, re, sys, types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from run_notebooks import coalesce_streams, run_in_kernel   # noqa: E402


class Writes(io.StringIO):
    "A stdout that records each `write` call, as ipykernel's stream sends each one as its own message."
    def __init__(self): super().__init__(); self.calls = []
    def write(self, s): self.calls.append(s); return super().write(s)


def test_rank_print_writes_each_line_once(monkeypatch):
    "One write per line: a rank's text and its newline never arrive separately (two ranks would interleave between them)."
    from distrinews.ddp import rank_print
    out = Writes()
    monkeypatch.setattr(sys, "stdout", out)
    rank_print("sum of ranks =", 1, all_ranks=True)
    rank_print("a", "b", sep="-", end="!\n")
    assert [c for c in out.calls if c] == ["[rank 0] sum of ranks = 1\n", "a-b!\n"], out.calls   # ('' sends nothing)


def _live_in_child(q):
    from distrinews.loop import live_progress
    q.put(live_progress())


def test_no_live_bar_in_a_forked_rank(monkeypatch):
    "In the kernel's own process a bar is live; in a rank forked from it (notebook_launcher) it is text, as with TQDM_DISABLE."
    from distrinews.loop import live_progress
    monkeypatch.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or types.ModuleType("ipykernel"))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert live_progress()                       # the kernel itself: a widget can be sent
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_live_in_child, args=(q,))
    p.start(); p.join(30)
    assert q.get(timeout=5) is False             # a forked rank: no widget (it could not reach the kernel)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not live_progress()


def test_run_async_inside_a_running_loop():
    "What a notebook cell meets in a Jupyter kernel: an event loop already runs, and `asyncio.run` refuses to nest."
    from distrinews.api import run_async
    async def in_kernel():
        with pytest.raises(RuntimeError, match="running event loop"): asyncio.run(asyncio.sleep(0))
        return run_async(asyncio.sleep(0, result=42))
    assert asyncio.run(in_kernel()) == 42


LAUNCH = '''
def hello(n):
    from distrinews.ddp import rank_print, setup_distributed, cleanup_distributed
    setup_distributed()
    for i in range(n): rank_print(f"line {i} of {n}", all_ranks=True)
    cleanup_distributed()
'''


def test_launched_ranks_print_whole_lines_in_a_real_kernel(tmp_path):
    "Two ranks forked by notebook_launcher from a real ipykernel: every line under the launch cell is one rank's, whole."
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from accelerate import notebook_launcher"),
        nbformat.v4.new_code_cell(LAUNCH),
        nbformat.v4.new_code_cell("notebook_launcher(hello, args=(20,), num_processes=2)"),
        # Run All runs what nbdev would skip: a module's `__main__` guard must not run the CLI on the kernel's argv
        nbformat.v4.new_code_cell('#| eval: false\nimport distrinews.cli\nif __name__ == "__main__" and "get_ipython" not in globals(): '
                                  'raise SystemExit(distrinews.cli.main())\nprint("still here")'),
    ])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_in_kernel(nb, tmp_path, timeout=180)
    coalesce_streams(nb)
    text = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.output_type == "stream")
    lines = [l for l in text.splitlines() if l.startswith("[rank") or "line " in l]
    bad = [l for l in lines if not re.fullmatch(r"\[rank [01]\] line \d+ of 20", l)]
    assert not bad, f"lines that are not one rank's whole line: {bad[:5]}"
    assert sorted(lines) == sorted(f"[rank {r}] line {i} of 20" for r in (0, 1) for i in range(20)), text
    assert "still here" in nb.cells[3].outputs[0]["text"]
