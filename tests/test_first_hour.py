"""The first hour on a real GPU (issue 29), on the CPU: the device faked at the lowest level (`torch.cuda.is_initialized`,
`device_count`, `get_device_name`, `shutil.disk_usage`, an injected `torch.OutOfMemoryError`), never the function under test."""
from __future__ import annotations
import gc, os, sys, time, weakref
from pathlib import Path
import pytest
import torch

from distrinews.config import load_config

sys.path.insert(0, str(Path(__file__).parent))
from test_devices import Machine, fake_machine  # noqa: E402


# 4. MFU against the data sheet's peak in the run's precision and the GPU's variant

# dense TFLOP/s from the data sheets: fp32 (CUDA cores), fp16, bf16 (None: no native unit, a T4 emulates bf16)
DATASHEET = {"Tesla T4": (8.1, 65, None), "NVIDIA A100-SXM4-80GB": (19.5, 312, 312), "NVIDIA H100 PCIe": (51, 756, 756),
             "NVIDIA H100 80GB HBM3": (67, 989, 989), "NVIDIA H100 NVL": (60, 835, 835), "NVIDIA L4": (30.3, 121, 121),
             "NVIDIA A10G": (31.2, 70, 70)}

@pytest.mark.parametrize("name", DATASHEET)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_vendor_peak_per_precision_and_variant(monkeypatch, name, precision):
    from distrinews.bench import mfu, vendor_peak_flops
    from distrinews.ddp import describe_hardware
    fake_machine(monkeypatch, Machine(name, gpus=2, gpu_name=name, capability=(8, 0)))   # the driver's name, through NVML
    hw = describe_hardware()
    want = dict(zip(("fp32", "fp16", "bf16"), DATASHEET[name]))[precision]
    got = vendor_peak_flops(hw, 2, precision)
    assert got == (pytest.approx(want * 1e12 * 2) if want else None), (name, precision, got)
    m = mfu(dict(flops_per_token=1e9, train_tokens_per_s=1e4, peak_flops=1e13, precision=precision), hw, 2)
    assert m["vendor_peak_flops"] == got and (m["mfu_vendor"] is None) == (want is None)


# 5. the matmul peak: warmed up, and each timing long enough to measure

def test_peak_flops_timings_last_at_least_min_s(monkeypatch):
    from distrinews.run import measure_peak_flops
    stamps, clock = [], time.perf_counter
    def recording(): stamps.append(clock()); return stamps[-1]
    monkeypatch.setattr(time, "perf_counter", recording)
    measure_peak_flops(torch.device("cpu"), "fp32", n=32, reps=1, trials=2, min_s=0.03)
    timings = [b - a for a, b in zip(stamps[::2], stamps[1::2])]
    assert len(timings) >= 3, timings                       # at least one warm-up timing, then the trials
    assert max(timings[:-2]) >= 0.03, timings                # reps doubled until one timing lasted min_s
    assert min(timings[-2:]) >= 0.003, timings              # the counted ones: near min_s (a busy CPU varies), not a launch's ~1e-5 s


# 6. and 9. the batch probe: training's peak memory, not the probe's; the probe's length as the collator pads it

class FakeAllocator:
    "torch.cuda's allocator statistics: the probe's worst case raises the peak, `reset_peak_memory_stats` lowers it to what is held."
    def __init__(self, monkeypatch):
        self.held, self.peak = 100 * 2**20, 100 * 2**20
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: setattr(self, "peak", self.held))
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

def test_probe_leaves_no_peak_and_probes_the_padded_length(monkeypatch):
    from distrinews.ddp import DistEnv, peak_mem_mb
    from distrinews.run import fit_batch_size
    mem, seen = FakeAllocator(monkeypatch), []
    def probe(model, bs, max_len, env, precision):      # the worst case: 8 GiB at batch 64, too much; fits at 32
        seen.append((bs, max_len))
        mem.peak = max(mem.peak, mem.held + bs * 2**27)
        return bs <= 32
    env = DistEnv(device=torch.device("cuda", 0))
    bs, accum = fit_batch_size(None, load_config("quick", batch_size=64), env, 21, "fp16", probe=probe)
    assert (bs, accum) == (32, 2)
    assert peak_mem_mb(env.device) == 100, peak_mem_mb(env.device)   # the summary's peak starts from here, not 8 GiB
    assert seen == [(64, 24), (32, 24)], seen           # 21 tokens padded to 24: what the collator makes on CUDA


# 9. one read of the fp16 scale per optimizer step

def test_optimizer_step_reads_the_scale_once(monkeypatch):
    from distrinews.loop import optimizer_step
    lin = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)        # no CPU step counter of its own to read
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(lin(torch.ones(3, 4)).sum()).backward()
    syncs = []
    for name in ("item", "__bool__", "tolist"):          # every way a tensor's value reaches Python (a host-device sync on a GPU)
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _n=name: (syncs.append(_n), _real(self, *a))[1])
    assert optimizer_step(lin, opt, sched, scaler, 1.0) is True
    monkeypatch.undo()
    # GradScaler.step reads found_inf once itself (it must, to decide the step); the trainer adds one read, not two
    assert len(syncs) <= 2, syncs
    assert sched.last_epoch == 1


# 9. TF32 decided by a flag with a recorded default

def test_tf32_is_a_flag_decided_at_start(tmp_path):
    from distrinews.ddp import DDPStrategy, DistEnv
    from distrinews.run import start_run
    assert load_config("quick").tf32 is False                               # the recorded default: strict fp32
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True   # whatever ran before in this process
        env = DistEnv(device=torch.device("cuda", 0))
        start_run(load_config("quick", precision="fp32", output=str(tmp_path/"a")), env, DDPStrategy())
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
        start_run(load_config("quick", precision="fp32", tf32=True, output=str(tmp_path/"b")), env, DDPStrategy())
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# 2. a failed run (an out-of-memory error in the kernel, as on Colab) gives back what it held

class KeepWatch:
    "A callback that watches the model (by weak reference) and makes its forward pass run out of GPU memory at call `at`."
    def __init__(self, at: int): self.at, self.calls, self.model = at, 0, None
    def on_train_begin(self, state, info):
        self.model = weakref.ref(info["model"])
        info["model"].register_forward_pre_hook(self._maybe_oom)
    def _maybe_oom(self, module, args):
        self.calls += 1
        if self.calls == self.at: raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    def __getattr__(self, name): return lambda *a, **k: None   # the other events


def test_failed_run_releases_the_model_and_the_cache(tmp_path, monkeypatch):
    from distrinews.loop import OutOfMemory
    from distrinews.train import train
    cfg = load_config("quick", data="synthetic:200", epochs=1, max_steps=4, nproc=1, output=str(tmp_path), log_every=1)
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)     # the kernel holds a CUDA context, as on Colab
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    watch = KeepWatch(at=3)
    with pytest.raises(OutOfMemory, match="out of memory at step 3") as err:
        train(cfg, callbacks=[watch], progress=False)
    gc.collect()
    assert watch.model() is None, "the error still holds the model (and its gradients, optimizer state): the GPU stays full"
    assert emptied, "the cached GPU memory was not returned"
    assert "out of memory" in "".join(__import__("traceback").format_exception(err.value))   # the traceback still prints


# 3. Kaggle's disk: the checkpoints must fit at the output

def test_run_whose_checkpoints_do_not_fit_is_refused_before_the_first_step(tmp_path, monkeypatch):
    import shutil
    from distrinews.config import ConfigError
    from distrinews.train import train
    cfg = load_config("quick", data="synthetic:200", epochs=1, max_steps=2, nproc=1, output=str(tmp_path/"run"))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(20 * 10**9, 20 * 10**9 - 10**5, 10**5))
    with pytest.raises(ConfigError, match=r"output: this run writes about [\d.]+ [KMG]iB .* only 98 KiB is free there; give --output") as e:
        train(cfg, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path/"run"/"metrics.jsonl").exists()          # refused before the first step
    monkeypatch.undo()
    assert train(cfg, progress=False)["global_step"] == 2          # with room it runs


def test_fsdp_preset_writes_where_it_fits(monkeypatch, capsys):
    from distrinews.checkpoint import output_bytes
    fake_machine(monkeypatch, Machine("2xT4", gpus=2, gpu_name="Tesla T4", capability=(7, 5), memory_gb=15.0))
    cfg = load_config("auto", strategy="fsdp")
    assert cfg.model == "facebook/opt-1.3b"
    assert output_bytes(1_315_758_080, 1_315_758_080)["peak"] > 20e9              # more than /kaggle/working keeps
    assert Path(cfg.output).is_absolute() and Path(cfg.output).parts[1] == "tmp", cfg.output   # the scratch disk


# 7. FSDP2 gathers the weights in the run's half type and reduces the gradients in fp32

class DtypeProbe:
    "Records the dtype of a block's weight as the forward sees it (FSDP2: after the all-gather) and of its gradient as reduced."
    def __init__(self, out): self.out, self.seen = Path(out), {}
    def on_train_begin(self, state, info):
        from distrinews.fsdp import transformer_blocks
        lin = next(m for m in transformer_blocks(info["model"])[0].modules() if isinstance(m, torch.nn.Linear))
        lin.register_forward_pre_hook(lambda m, a: self.seen.setdefault("forward_weight", str(m.weight.dtype)) and None)
        self.lin = lin
    def on_train_end(self, state, summary):
        import json
        from distrinews.ddp import get_rank
        self.seen["shard"] = str(self.lin.weight.dtype)
        (self.out/f"dtypes_rank{get_rank()}.json").write_text(json.dumps(self.seen))
    def __getattr__(self, name): return lambda *a, **k: None


def train_with_dtype_probe(cfg):
    from distrinews.train import train
    return train(cfg, callbacks=[DtypeProbe(cfg.output)], progress=False)


def test_fsdp_fp16_gathers_in_half_and_matches_ddp(tmp_path):
    import json
    from dataclasses import replace
    from distrinews.train import launch_fn
    base = load_config("quick", data="synthetic:400", epochs=1, max_steps=6, batch_size=16, dropout=0.0, log_every=1,
                       precision="fp16", grad_checkpointing=True)
    runs = {}
    for strategy in ("ddp", "fsdp"):
        cfg = replace(base, strategy=strategy, output=str(tmp_path/strategy))
        s = launch_fn(train_with_dtype_probe, (cfg,), 2)
        losses = [json.loads(l)["loss"] for l in (tmp_path/strategy/"metrics.jsonl").read_text().splitlines() if '"train"' in l]
        runs[strategy] = dict(summary=s, losses=losses, dtypes=json.loads((tmp_path/strategy/"dtypes_rank1.json").read_text()))
    f = runs["fsdp"]
    assert f["dtypes"] == {"forward_weight": "torch.float16", "shard": "torch.float32"}, f["dtypes"]   # half on the wire, fp32 master
    assert runs["ddp"]["dtypes"]["forward_weight"] == "torch.float32"                                  # DDP: autocast casts per op
    assert f["summary"]["global_step"] == runs["ddp"]["summary"]["global_step"] == 6 and f["summary"]["skipped_steps"] == runs["ddp"]["summary"]["skipped_steps"]
    assert f["losses"] == pytest.approx(runs["ddp"]["losses"], abs=2e-2), (f["losses"], runs["ddp"]["losses"])


# 8. serving on a GPU: one padded batch per forward there; the device warmed up before the service says it is ready

CKPT_ARGS = dict(samples=64, epochs=1)    # conftest's `ckpt`: a small tiny checkpoint


def test_batch_cut_follows_the_device(ckpt):
    from distrinews.loader import ModelLoader, padding_cut
    assert (padding_cut(torch.device("cpu")), padding_cut(torch.device("cuda", 0))) == (0.25, None)
    cpu = ModelLoader(ckpt, dtype="fp32", device="cpu")
    assert cpu.max_padding == 0.25                                           # the default follows the device
    forwards = []
    cpu.model.register_forward_pre_hook(lambda m, a, k: forwards.append(k["input_ids"].shape) and None, with_kwargs=True)
    texts = ["short", "a somewhat longer text about markets and trade " * 3, "mid length news about sport"]
    cpu.predict_batch(texts)
    n_cpu = len(forwards)
    forwards.clear()
    cpu.max_padding = padding_cut(torch.device("cuda", 0))                  # what a GPU's loader gets
    cpu.predict_batch(texts)
    assert n_cpu > 1 and len(forwards) == 1, (n_cpu, forwards)                # a GPU: one forward for the whole batch


def test_server_warms_up_before_it_reports_ready(ckpt):
    from fastapi.testclient import TestClient
    from distrinews.api import create_app
    from distrinews.loader import ModelLoader
    loader = ModelLoader(ckpt, dtype="fp32", device="cpu")
    forwards = []
    loader.model.register_forward_pre_hook(lambda m, a: forwards.append(1) and None)
    app = create_app(loader=loader, max_batch=8)
    assert forwards == []
    with TestClient(app) as c:                                               # the server's startup (lifespan) has run
        warmed = len(forwards)
        assert c.get("/health").json()["status"] == "ok"
        assert warmed >= 1, "the service reported ready before the model's first forward"
        assert c.get("/health").json()["batches"] == 0                       # the warm-up is not counted as traffic


# 10. the GPU check runs on the lent machine: from the checkout, with carried wheels, its JSON where it is told

from helpers import ROOT  # noqa: E402

def _sh(*cmd, **env):
    import subprocess
    return subprocess.run(["bash", *cmd], capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **env})

def test_gpu_check_needs_out_and_real_wheels(tmp_path):
    r = _sh("tools/gpu_check.sh", "--cpu")
    assert r.returncode == 2 and "--out" in r.stderr, r.stderr[-500:]                    # the JSON goes where it is told ($OUT)
    (tmp_path/"wheels").mkdir()
    r = _sh("tools/gpu_check.sh", "--cpu", "--wheels", str(tmp_path/"wheels"), "--out", str(tmp_path/"x.json"))
    assert r.returncode == 2 and "no wheels in" in r.stderr and "device_wheels.sh" in r.stderr, r.stderr[-500:]

def test_gpu_check_runs_the_checkout_without_a_distrinews_command():
    "No `distrinews` on PATH, no install: the script puts the checkout first on PYTHONPATH and runs `python -m distrinews.cli`."
    text = (ROOT/"tools/gpu_check.sh").read_text()
    assert '"distrinews", ' not in text and "command -v distrinews" not in text
    assert 'DN = [sys.executable, "-m", "distrinews.cli"]' in text and "stdout=subprocess.PIPE" not in text
    assert 'ROOT=$(cd "$(dirname "$0")/.." && pwd)' in text and 'export PYTHONPATH="$ROOT' in text   # the checkout first

def test_device_wheels_takes_the_python_version():
    r = _sh("tools/device_wheels.sh")
    assert r.returncode == 2 and "usage: tools/device_wheels.sh DIR [--python X.Y]" in r.stderr
    text = (ROOT/"tools/device_wheels.sh").read_text()
    assert "PYV=3.12" in text and "--only-binary=:all:" in text and "manylinux2014_x86_64" in text and "64 * 1024 * 1024" in text
