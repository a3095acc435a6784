"""Every hardware-dependent choice, for the machines users run on, with the hardware faked at the lowest level.

The fakes are what torch and the driver report (`torch.cuda.device_count`, `is_available`,
`get_device_capability`, `get_device_properties`, `get_device_name`, the NVML module, the CPU's bf16 flags), never
distrinews' own answers, so each row runs the real decision code: the `auto` preset, the FSDP preset, the trainer's
precision, the loader's dtype, the benchmark's precisions and vendor peak, the naive server's device, the doctor's
hardware report. A row fails if any of its choices is wrong (a T4 must never be given bf16: it only emulates it).
"""
from __future__ import annotations
import sys, types
from dataclasses import dataclass

import pytest
import torch

from distrinews.config import load_config


@dataclass
class Machine:
    name: str
    gpus: int = 0
    gpu_name: str = ""             # as the driver (NVML, torch) reports it
    capability: tuple = (0, 0)
    memory_gb: float = 0.0
    cpu_bf16: bool = False         # CPU flags: avx512_bf16 (AMX off)
    # what distrinews must choose there
    preset: str = ""
    nproc: int = 0
    fsdp_model: str = ""
    precision: str = ""
    bench_precisions: tuple = ()
    vendor_tflops: float | None = None


MACHINES = [
    Machine("cpu-without-bf16", preset="quick", nproc=2, fsdp_model="tiny", precision="fp32", bench_precisions=("fp32",)),
    Machine("cpu-with-bf16", cpu_bf16=True, preset="quick", nproc=2, fsdp_model="tiny", precision="bf16",
            bench_precisions=("fp32", "bf16")),
    Machine("1xT4", gpus=1, gpu_name="Tesla T4", capability=(7, 5), memory_gb=15.0, preset="colab-1gpu", nproc=1,
            fsdp_model="distilbert-base-uncased", precision="fp16", bench_precisions=("fp16",), vendor_tflops=65),
    Machine("2xT4", gpus=2, gpu_name="Tesla T4", capability=(7, 5), memory_gb=15.0, preset="kaggle-2xt4", nproc=2,
            fsdp_model="facebook/opt-1.3b", precision="fp16", bench_precisions=("fp16",), vendor_tflops=65),
    Machine("1xA100", gpus=1, gpu_name="NVIDIA A100-SXM4-40GB", capability=(8, 0), memory_gb=40.0, preset="colab-1gpu",
            nproc=1, fsdp_model="distilbert-base-uncased", precision="bf16", bench_precisions=("bf16",), vendor_tflops=312),
]


def fake_machine(monkeypatch, m: Machine) -> None:
    "Make torch, the NVIDIA driver (NVML) and the CPU flags report machine `m`."
    props = types.SimpleNamespace(name=m.gpu_name, major=m.capability[0], minor=m.capability[1],
                                  total_memory=int(m.memory_gb * 2**30), multi_processor_count=40)
    def gpu(i):
        i = 0 if i is None else (i.index or 0) if isinstance(i, torch.device) else int(i)
        if not 0 <= i < m.gpus: raise AssertionError(f"GPU {i} asked for on a machine with {m.gpus}")
        return i
    monkeypatch.setattr(torch.cuda, "device_count", lambda: m.gpus)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: m.gpus > 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (gpu(i), m.capability)[1])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=None: (gpu(i), props)[1])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: (gpu(i), m.gpu_name)[1])
    monkeypatch.setattr(torch.cuda, "can_device_access_peer", lambda i, j: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: m.cpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    nvml = types.ModuleType("pynvml")           # the driver's view, which describe_hardware reads without a CUDA context
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = gpu
    nvml.nvmlDeviceGetName = lambda h: m.gpu_name
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: m.capability
    monkeypatch.setitem(sys.modules, "pynvml", nvml)


CKPT_ARGS = dict(samples=64, epochs=1)    # conftest's `ckpt`, made before any machine is faked (module scope: set up first)


@pytest.fixture(params=MACHINES, ids=[m.name for m in MACHINES])
def machine(request, monkeypatch):
    fake_machine(monkeypatch, request.param)
    return request.param


def test_auto_and_fsdp_presets(machine, capsys):
    cfg = load_config("auto")
    assert (cfg.preset, cfg.nproc) == (machine.preset, machine.nproc)
    assert load_config("auto", strategy="fsdp").model == machine.fsdp_model


def test_trainer_and_loader_choose_the_same_precision(machine):
    from distrinews.loader import pick_device, resolve_dtype
    from distrinews.run import choose_precision
    device = torch.device("cuda", 0) if machine.gpus else torch.device("cpu")
    assert choose_precision("auto", device)[0] == machine.precision
    assert pick_device() == (torch.device("cuda") if machine.gpus else torch.device("cpu"))
    assert resolve_dtype("auto", pick_device()) == machine.precision
    if machine.gpus:
        from distrinews.model import ModelError
        with pytest.raises(ModelError, match="int8 .* runs on CPU only"): resolve_dtype("int8", pick_device())


def test_benchmark_precisions_and_vendor_peak(machine):
    from distrinews.bench import default_precisions, default_world_sizes, hardware_label, vendor_peak_flops
    from distrinews.ddp import describe_hardware
    hw = describe_hardware()
    assert default_precisions(hw) == machine.bench_precisions
    assert default_world_sizes(hw) == ((1, machine.gpus) if machine.gpus > 1 else (1,) if machine.gpus else (1, 2))
    n = max(machine.gpus, 1)
    assert vendor_peak_flops(hw, n, machine.precision) == (machine.vendor_tflops * 1e12 * n if machine.vendor_tflops else None)
    if machine.gpus:
        assert hw["name"] == machine.gpu_name and hw["capability"] == "{}.{}".format(*machine.capability)
        assert hardware_label(hw) == f"GPU: {machine.gpus} x {machine.gpu_name}"


def test_doctor_reports_the_hardware(machine):
    from distrinews.cli import doctor_hardware
    hw = doctor_hardware()
    if not machine.gpus:
        assert (hw["kind"], hw["native_bf16"]) == ("cpu", machine.cpu_bf16)
        return
    assert hw["kind"] == "gpu" and hw["count"] == machine.gpus
    assert [(g["name"], g["capability"], g["bf16"]) for g in hw["gpus"]] == \
        [(machine.gpu_name, "{}.{}".format(*machine.capability), machine.precision == "bf16")] * machine.gpus


def test_naive_server_computes_where_distrinews_does(ckpt, machine, monkeypatch):
    "The serving benchmark's baseline must not sit on the CPU while distrinews serves on the GPU."
    import transformers
    from distrinews.servebench import naive_app
    seen = {}
    monkeypatch.setattr(transformers, "pipeline", lambda *a, **k: seen.update(k) or (lambda *a, **k: None))
    naive_app(ckpt)
    assert torch.device(seen["device"]).type == ("cuda" if machine.gpus else "cpu")


def test_hf_trainer_baseline_sees_one_gpu(monkeypatch):
    "With 2 GPUs visible the HF Trainer would use nn.DataParallel over both: the baseline runs with one."
    from distrinews import bench
    fake_machine(monkeypatch, MACHINES[3])
    asked = {}
    class Stop(Exception): pass
    def fake_isolated(fn, *args, gpus=None):
        asked["gpus"] = gpus
        raise Stop
    monkeypatch.setattr(bench, "isolated", fake_isolated)
    with pytest.raises(Stop): bench.measure_run("hf_trainer", load_config("quick"), 1)
    assert asked["gpus"] == "0"


def test_isolated_limits_the_gpus_of_the_child_only(monkeypatch):
    import os
    from distrinews.bench import isolated
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert isolated(os.getenv, "CUDA_VISIBLE_DEVICES", gpus="0") == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_trainable_weights_load_in_fp32_whatever_the_checkpoint_dtype(tmp_path):
    """transformers 5 loads a checkpoint in the dtype it was saved in (OPT-1.3B: fp16); fp16 master weights make
    GradScaler.unscale_ raise at the first step. The loader casts to fp32 on every path."""
    from distrinews.model import load_model
    model, tok = load_model("tiny")
    model.half().config.dtype = torch.float16
    model.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    assert '"float16"' in (tmp_path / "config.json").read_text()
    loaded, _ = load_model(str(tmp_path))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    scaler = torch.amp.GradScaler("cpu")                 # and the fp16 training step the Kaggle FSDP run takes works
    opt = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    x = torch.randint(5, 100, (2, 8))
    with torch.autocast("cpu", dtype=torch.float16):
        loss = loaded(input_ids=x, attention_mask=torch.ones_like(x), labels=torch.zeros(2, dtype=torch.long)).loss
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    scaler.step(opt); scaler.update()
