"""FSDP2 from the same trainer, on CPU with gloo: the same losses, weights and metrics as DDP and as one process,
half the per-rank state on 2 ranks, exact resume after SIGKILL from sharded `last/`, and a `best/` that
transformers and `distrinews serve` load."""
import json, sys
from pathlib import Path
import httpx
import pytest
import torch
from safetensors.torch import load_file

from distrinews.servebench import serve_in_subprocess
from distrinews.config import LABELS, load_config
from distrinews.train import launch_fn

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import train_with_inf_on_rank1_at_step3  # noqa: E402
from helpers import run_cli  # noqa: E402
from test_train import RESUME, assert_same_weights, kill_then_resume, losses  # noqa: E402

# 380 training rows (even: no row repeated to fill the ranks), dropout off, global batch 16 in 2 micro-batches:
# the FSDP run skips the gradient sync of every first micro-batch (set_requires_gradient_sync(False))
COMMON = ["train", "--config", "quick", "--data", "synthetic:400", "--epochs", "1", "--dropout", "0",
          "--log-every", "1", "--no-group-by-length", "--grad-accum", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("strategies")
    run_cli(*COMMON, "--nproc", "2", "--batch-size", "4", "--strategy", "fsdp", "--output", d/"fsdp")
    run_cli(*COMMON, "--nproc", "2", "--batch-size", "4", "--strategy", "ddp", "--output", d/"ddp")
    run_cli(*COMMON, "--nproc", "1", "--batch-size", "8", "--output", d/"one")
    return d


def summary(out): return json.loads((Path(out)/"summary.json").read_text())


def test_fsdp_ddp_and_one_rank_agree_step_by_step(runs):
    lf, ld, l1 = (losses(runs/s) for s in ("fsdp", "ddp", "one"))
    assert len(lf) == len(ld) == len(l1) == 24
    assert lf == pytest.approx(ld, rel=1e-5, abs=1e-6)
    assert lf == pytest.approx(l1, rel=1e-4, abs=1e-5)
    wf, wd, w1 = (load_file(str(runs/s/"best"/"model.safetensors")) for s in ("fsdp", "ddp", "one"))
    assert wf.keys() == wd.keys() == w1.keys()
    for k in wf:
        torch.testing.assert_close(wf[k], wd[k], rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(wf[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    sf, sd, s1 = (summary(runs/s) for s in ("fsdp", "ddp", "one"))
    assert (sf["strategy"], sd["strategy"], s1["strategy"]) == ("fsdp", "ddp", "single")
    for k in ("accuracy", "macro_f1", "n"): assert sf["eval"][k] == sd["eval"][k] == s1["eval"][k], k
    assert sf["confusion"] == sd["confusion"] == s1["confusion"]


def test_fsdp_holds_half_the_state_per_rank_on_two_ranks(runs):
    fsdp, ddp = summary(runs/"fsdp")["state_bytes_per_rank"], summary(runs/"ddp")["state_bytes_per_rank"]
    assert ddp > 0 and fsdp / ddp == pytest.approx(0.5, abs=0.01)   # the largest rank's shards: 1/N, up to rounding of rows


def test_fsdp_best_loads_in_transformers_pipeline_and_distrinews_serve(runs):
    from transformers import pipeline
    best = runs/"fsdp"/"best"
    assert json.loads((best/"config.json").read_text())["architectures"] == ["DistilBertForSequenceClassification"]
    clf = pipeline("text-classification", model=str(best), device="cpu")
    text = "Stocks rallied on Wall Street after strong earnings."
    assert clf(text)[0]["label"] in LABELS
    with serve_in_subprocess("distrinews", best, dtype="fp32") as url:
        r = httpx.post(url + "/predict", json={"text": text}, timeout=30)
    assert r.status_code == 200 and r.json()["label"] == clf(text)[0]["label"]


def test_fsdp_last_is_sharded_and_not_served(runs):
    last = runs/"fsdp"/"last"
    assert (last/"sharded"/".metadata").is_file() and len(list((last/"sharded").glob("*.distcp"))) == 2
    assert not (last/"model.safetensors").exists() and not (last/"optimizer.pt").exists()
    r = run_cli("predict", "--checkpoint", last, "a text", check=False)
    assert r.returncode == 2 and "sharded training state of an FSDP run" in r.stderr and "Traceback" not in r.stderr


def test_resume_with_another_strategy_is_refused_in_one_line(runs, tmp_path):
    r = run_cli(*COMMON, "--nproc", "2", "--batch-size", "4", "--strategy", "ddp", "--output", runs/"fsdp", "--resume", check=False)
    assert r.returncode == 2 and "strategy: fsdp → ddp" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


FSDP_RESUME = [*RESUME, "--strategy", "fsdp", "--save-every", "10"]


def test_fsdp_sigkill_then_resume_is_bitwise_identical(tmp_path):
    full, out = tmp_path/"full", tmp_path/"killed"
    run_cli(*FSDP_RESUME, "--output", full)
    assert kill_then_resume(FSDP_RESUME, out)["sharded"]               # killed mid-epoch, mid-run, with sharded last/
    assert_same_weights(full/"best", out/"best")                     # best/ = the final model (one evaluation, at the end)
    a, b = summary(full), summary(out)
    assert a["eval"] == b["eval"] and b["global_step"] == 40


def test_fsdp_fp16_scaler_skips_the_same_step_on_every_rank(tmp_path):
    "An inf in one rank's gradient shard only: the scaler's check reaches every rank, so all skip that step together."
    cfg = load_config("quick", data="synthetic:400", epochs=1, max_steps=6, precision="fp16", strategy="fsdp",
                      output=tmp_path, log_every=1)
    s = launch_fn(train_with_inf_on_rank1_at_step3, (cfg,), 2)
    seen = [json.loads((tmp_path/f"skipped_rank{r}.json").read_text()) for r in (0, 1)]
    assert seen == [{"skipped": 1, "step": 6}] * 2, seen
    assert s["skipped_steps"] == 1 and s["strategy"] == "fsdp" and s["precision"] == "fp16"
