"""The trainer's GPU code paths, exercised on CPU with real 2-process gloo runs: fp16 (a real GradScaler("cpu")) and
bf16 autocast, exact resume under fp16, fp16 overflow (skipped step, halved scale, schedule held), the OOM back-off
(one rank out of memory: both ranks halve), a clear failure for an out-of-memory during training, and `auto`'s choice."""
import json, math, os, sys, time
from pathlib import Path
import pytest
import torch

import distrinews.ddp as D
import distrinews.run as R
from distrinews.config import load_config
from distrinews.ddp import get_rank
from distrinews.train import launch_fn

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import train_with_param_hash  # noqa: E402
from helpers import run_cli  # noqa: E402
from test_train import RESUME, assert_same_weights, kill_then_resume, losses  # noqa: E402

# Imported by every Python process (the CLI, its spawned ranks) when this folder's `hooks_site/` is first on
# PYTHONPATH: injections into a real run without test hooks in the package.
#   DISTRINEWS_TEST_INF_STEP=k   rank 1's gradients are inf at optimizer step k (before DDP's all-reduce, like a real overflow)
#   DISTRINEWS_TEST_OOM_STEP=k   rank 1 raises CUDA's out-of-memory error in its forward pass at step k
#   DISTRINEWS_TEST_HASH=1       every rank writes a hash of its parameters to OUT/params_rank{r}.json at the end
SITECUSTOMIZE = '''
import os
if any(k.startswith("DISTRINEWS_TEST_") for k in os.environ):
    import hashlib, json, torch
    import torch.distributed as dist
    import distrinews.loop as t, distrinews.run as r
    def _rank(): return dist.get_rank() if dist.is_initialized() else 0
    _micro, _finish = t.micro_step, r.finish
    def micro_step(run, b, rows, sync):
        step = run.state.global_step + 1
        if _rank() == 1 and step == int(os.environ.get("DISTRINEWS_TEST_OOM_STEP", -1)):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        hook = None
        if _rank() == 1 and step == int(os.environ.get("DISTRINEWS_TEST_INF_STEP", -1)):
            p = next(p for p in t.unwrap(run.model).parameters() if p.requires_grad)
            hook = p.register_hook(lambda g: g * float("inf"))
        try: return _micro(run, b, rows, sync)
        finally:
            if hook is not None: hook.remove()
    def finish(run):
        s = _finish(run)
        if os.environ.get("DISTRINEWS_TEST_HASH"):
            h = hashlib.sha256()
            for n, p in sorted(t.unwrap(run.model).named_parameters()): h.update(n.encode()); h.update(p.detach().cpu().numpy().tobytes())
            (run.out/f"params_rank{_rank()}.json").write_text(json.dumps({"sha256": h.hexdigest()}))
        return s
    t.micro_step, r.finish = micro_step, finish
'''


@pytest.fixture
def hooks(tmp_path):
    "An environment for `run_cli` whose processes import SITECUSTOMIZE, with the given DISTRINEWS_TEST_* settings."
    site = tmp_path/"hooks_site"
    site.mkdir()
    (site/"sitecustomize.py").write_text(SITECUSTOMIZE)
    def env(**kw):
        e = {k: v for k, v in os.environ.items() if not k.startswith("DISTRINEWS_TEST_")}
        e["PYTHONPATH"] = os.pathsep.join([str(site), str(Path(__file__).parent.parent), e.get("PYTHONPATH", "")])
        return {**e, **{f"DISTRINEWS_TEST_{k.upper()}": str(v) for k, v in kw.items()}}
    return env


def rank_hashes(out):
    return [json.loads((Path(out)/f"params_rank{r}.json").read_text())["sha256"] for r in (0, 1)]


def saved_state(out):
    return torch.load(Path(out)/"last"/"state.pt", weights_only=True)


# 1. fp16 and bf16 on CPU, 2 ranks

@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_two_ranks_on_cpu(tmp_path, precision):
    cfg = load_config("quick", data="synthetic:1000", epochs=2, output=tmp_path, log_every=5, precision=precision)
    s = launch_fn(train_with_param_hash, (cfg,), 2)
    assert (s["world_size"], s["precision"], s["skipped_steps"]) == (2, precision, 0)
    assert s["precision_reason"].startswith("asked for")
    assert s["peak_flops"] > 0 and 0 < s["mfu"] < 1, (s["peak_flops"], s["mfu"])
    l = losses(tmp_path)
    assert all(math.isfinite(x) for x in l), l
    assert l[-1] < l[0] - 0.1 and l[-1] < math.log(4) - 0.1, l   # learning: well below chance (ln 4 for 4 classes)
    a, b = rank_hashes(tmp_path)
    assert a == b
    sc = saved_state(tmp_path)["scaler"]
    if precision == "fp16":   # a real scaler: its scale and growth tracker are saved for resume
        assert sc["scale"] == 65536.0 and sc["_growth_tracker"] == s["global_step"], sc
        assert "slow" in s["precision_reason"]
    else: assert sc == {}     # bf16 needs no scaler


# 2. SIGKILL under fp16, then --resume: bitwise the uninterrupted run

FP16 = [*RESUME, "--precision", "fp16", "--save-every", "10"]


def test_fp16_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    full, out = tmp_path/"full", tmp_path/"killed"
    run_cli(*FP16, "--output", full)
    kill_then_resume(FP16, out)
    assert_same_weights(full/"last", out/"last")
    assert saved_state(full)["scaler"] == saved_state(out)["scaler"]
    a, b = (json.loads((d/"summary.json").read_text()) for d in (full, out))
    assert a["eval"] == b["eval"] and b["global_step"] == 40


# 3. fp16 overflow on one rank: the step is skipped everywhere, the scale halves, the schedule waits

def test_fp16_overflow_skips_step_halves_scale_and_holds_schedule(tmp_path, hooks):
    out = tmp_path/"o"
    run_cli("train", "--config", "quick", "--data", "synthetic:400", "--epochs", "1", "--nproc", "2", "--precision", "fp16",
            "--log-every", "1", "--output", out, env=hooks(inf_step=3, hash=1))
    s = json.loads((out/"summary.json").read_text())
    assert (s["global_step"], s["skipped_steps"]) == (6, 1)                  # the run went on to the end
    st = saved_state(out)
    assert st["scaler"]["scale"] == 32768.0                                  # 65536, halved once
    assert st["scheduler"]["last_epoch"] == 5                                # 6 steps, 5 of them real
    rows = [r for r in map(json.loads, (out/"metrics.jsonl").read_text().splitlines()) if r["event"] == "train"]
    lr = [r["lr"] for r in rows]
    assert lr[2] == lr[1] and lr[3] != lr[2], lr                             # step 3 did not advance the schedule
    assert all(math.isfinite(r["loss"]) for r in rows)
    a, b = rank_hashes(out)
    assert a == b


# 4. Out-of-memory back-off, in a real 2-process group, with the error on rank 1 only

class OOMAbove(torch.nn.Module):
    "Wraps a model; on rank `rank`, batches larger than `limit` rows raise CUDA's out-of-memory error."
    def __init__(self, m, limit, rank): super().__init__(); self.m, self.limit, self.rank = m, limit, rank
    def forward(self, **kw):
        if get_rank() == self.rank and kw["input_ids"].shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return self.m(**kw)


def _forced_probe(limit):
    "`fit_batch_size` with the real probe forced on CPU, on a model that is out of memory above `limit` rows on rank 1."
    orig = R.fit_batch_size
    def fit_batch_size(model, cfg, env, max_len, precision, probe=None):
        return orig(OOMAbove(model, limit, rank=1), cfg, env, max_len, precision, probe=R._probe)
    return fit_batch_size


def probe_in_group(limit, out):
    "Each rank of a real gloo group runs the back-off; writes what it chose."
    env = D.setup_distributed()
    try:
        model = R.load_model("tiny")[0]
        cfg = load_config("quick", data="synthetic:100", batch_size=32, grad_accum=1)
        t0 = time.perf_counter()
        bs, accum = _forced_probe(limit)(model, cfg, env, 64, "fp32")
        Path(out, f"rank{env.rank}.json").write_text(json.dumps([bs, accum, time.perf_counter() - t0]))
    finally: D.cleanup_distributed()


def train_with_forced_probe(cfg, limit):
    R.fit_batch_size = _forced_probe(limit)   # this spawned process only
    return train_with_param_hash(cfg)


def test_oom_on_one_rank_both_ranks_halve_together(tmp_path):
    launch_fn(probe_in_group, (10, str(tmp_path)), 2)
    r0, r1 = (json.loads((tmp_path/f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0[:2] == r1[:2] == [8, 4]                 # 32 -> 16 -> 8 rows on both ranks; 8 x 4 = 32 rows per step
    assert r0[2] < 60 and r1[2] < 60                  # no deadlock


def test_run_after_backoff_equals_hand_configured_run(tmp_path):
    common = dict(data="synthetic:400", epochs=1, log_every=1, dropout=0.0)
    s = launch_fn(train_with_forced_probe, (load_config("quick", output=tmp_path/"backoff", batch_size=32, **common), 20), 2)
    assert (s["per_device_batch"], s["grad_accum"], s["global_batch"]) == (16, 2, 64)
    h = launch_fn(train_with_param_hash, (load_config("quick", output=tmp_path/"hand", batch_size=16, grad_accum=2, **common),), 2)
    assert (h["per_device_batch"], h["grad_accum"], h["global_step"]) == (16, 2, s["global_step"])
    assert_same_weights(tmp_path/"backoff"/"last", tmp_path/"hand"/"last")
    assert losses(tmp_path/"backoff") == losses(tmp_path/"hand")


def test_oom_during_training_fails_every_rank_with_one_line(tmp_path, hooks):
    t0 = time.time()
    r = run_cli("train", "--config", "quick", "--data", "synthetic:400", "--epochs", "1", "--nproc", "2",
                "--output", tmp_path/"o", check=False, env=hooks(oom_step=3))
    assert time.time() - t0 < 120, "took too long: a rank hung"
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("distrinews train: error: out of memory at step 3 (per-device batch 32") and "rank 1" in last, last
    assert "--batch-size" in last and "--max-length" in last, last


# 6. precision=auto on CPU follows the CPU's native bf16

def test_auto_precision_follows_native_bf16(monkeypatch):
    cpu = torch.device("cpu")                             # the CPU's flags faked, not distrinews' answer functions
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    p, why = R.choose_precision("auto", cpu)
    assert p == "bf16" and "native bf16" in why
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert R.choose_precision("auto", cpu) == ("fp32", "auto: no native bf16 on this cpu")
    assert load_config("quick").precision == "fp32"        # presets that choose keep their choice
    assert R.resolve_precision(load_config("quick").precision, cpu) == "fp32"


def test_auto_precision_in_first_line_and_summary(tmp_path):
    r = run_cli("train", "--config", "quick", "--data", "synthetic:200", "--epochs", "1", "--nproc", "1",
                "--precision", "auto", "--output", tmp_path)
    want = R.choose_precision("auto", torch.device("cpu"))
    first = next(l for l in (r.stdout + r.stderr).splitlines() if l.startswith("distrinews:"))
    assert f"precision {want[0]} ({want[1]})" in first, first
    s = json.loads((tmp_path/"summary.json").read_text())
    assert (s["precision"], s["precision_reason"]) == want
    assert s["peak_flops"] > 1e8 and 0 < s["mfu"] < 1, (s["peak_flops"], s["mfu"])   # measured, not a datasheet number
