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
    from distrinews.ddp import measure_peak_flops
    stamps, clock = [], time.perf_counter
    def recording(): stamps.append(clock()); return stamps[-1]
    monkeypatch.setattr(time, "perf_counter", recording)
    measure_peak_flops(torch.device("cpu"), "fp32", n=32, reps=1, trials=2, min_s=0.03)
    timings = [b - a for a, b in zip(stamps[::2], stamps[1::2])]
    assert len(timings) >= 3, timings                       # at least one warm-up timing, then the trials
    assert min(timings[-2:]) >= 0.015, timings              # the counted ones: about min_s (a busy CPU varies), not a launch's latency
