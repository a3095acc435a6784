"""Real multi-process (gloo, CPU) checks of the trainer: identical weights across ranks, 1 vs 2 ranks,
exact metrics, exact resume after SIGKILL, crash-safe checkpoints, torchrun multi-node."""
import hashlib, json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file

import distrinews.train as T
from distrinews.config import Config, ConfigError, load_config
from distrinews.data import synthetic_news
from distrinews.ddp import DistEnv
from distrinews.model import load_model, save_model
from distrinews.checkpoint import find_checkpoint
from distrinews.model import enable_checkpointing
from distrinews.train import RankFailed, launch_fn
import distrinews.run as R

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import SITECUSTOMIZE, train_failing_on_rank1, train_with_param_hash  # noqa: E402
from helpers import CLI, run_cli, site_env  # noqa: E402


def losses(out):
    return [r["loss"] for r in map(json.loads, (Path(out)/"metrics.jsonl").read_text().splitlines()) if r["event"] == "train"]


def weights(path):
    return load_file(str(Path(path)/"model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


def test_two_ranks_end_with_identical_weights(tmp_path):
    cfg = load_config("quick", data="synthetic:600", epochs=1, output=tmp_path, log_every=5)
    s = launch_fn(train_with_param_hash, (cfg,), 2)
    assert s["world_size"] == 2
    hashes = [json.loads((tmp_path/f"params_rank{r}.json").read_text())["sha256"] for r in (0, 1)]
    assert hashes[0] == hashes[1]


def test_two_ranks_batch_b_equal_one_rank_batch_2b(tmp_path):
    # 380 training rows (even: no sample is repeated to fill the ranks), dropout off, same global batch of 16
    common = ["train", "--config", "quick", "--data", "synthetic:400", "--epochs", "1", "--dropout", "0",
              "--log-every", "1", "--no-group-by-length"]
    run_cli(*common, "--nproc", "2", "--batch-size", "8", "--output", tmp_path/"two")
    run_cli(*common, "--nproc", "1", "--batch-size", "16", "--output", tmp_path/"one")
    l2, l1 = losses(tmp_path/"two"), losses(tmp_path/"one")
    assert len(l1) == len(l2) == 24
    assert l1 == pytest.approx(l2, rel=1e-4, abs=1e-5)
    s1, s2 = (json.loads((tmp_path/d/"summary.json").read_text()) for d in ("one", "two"))
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    assert s1["eval"]["accuracy"] == s2["eval"]["accuracy"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    run_cli("train", "--config", "quick", "--data", "synthetic:600", "--epochs", "1", "--nproc", "1", "--output", out)
    return out/"best"


def test_eval_metrics_identical_on_one_and_two_ranks(checkpoint):
    res = {}
    for n in (1, 2):
        r = run_cli("eval", "--checkpoint", checkpoint, "--data", "synthetic:301", "--nproc", n, "--batch-size", 16)
        res[n] = json.loads(r.stdout.strip().splitlines()[-1])
    assert res[1]["n"] == res[2]["n"] == 301
    for k in ("accuracy", "precision", "recall", "macro_f1", "confusion"): assert res[1][k] == res[2][k], k
    assert res[1]["loss"] == pytest.approx(res[2]["loss"], rel=1e-6)


RESUME = ["train", "--config", "quick", "--data", "synthetic:3000", "--epochs", "1", "--max-steps", "40",
          "--nproc", "2", "--log-every", "5", "--eval-every", "0"]   # 2850 rows / 64 = 45 steps per epoch: all mid-epoch


def _kill_when(out, proc, min_step, extra_s=0.0, timeout=300):
    "SIGKILL the whole process group once `out/last` reports >= min_step (plus `extra_s`)."
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = out/"last"/"trainer_state.json"
        try: step = json.loads(st.read_text())["global_step"] if st.exists() else -1
        except (json.JSONDecodeError, OSError): step = -1
        if step >= min_step: break
        if proc.poll() is not None: raise AssertionError(f"run ended before step {min_step}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    time.sleep(extra_s)
    os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    return step


def _start(args):
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run_cli(*RESUME, "--save-every", "10", "--output", out)
    return out


def kill_then_resume(args, out, extra_s: float = 0.0) -> dict:
    "Start `distrinews <args> --output out`, SIGKILL it once `last/` holds step >= 10 (plus `extra_s`), check it died"
    " mid-epoch and mid-run, then `--resume` it to the end; the killed run's saved trainer state."
    proc = _start([*args, "--output", out])
    _kill_when(out, proc, 10, extra_s)
    st = json.loads((find_checkpoint(out/"last", need_state=True)/"trainer_state.json").read_text())
    assert 10 <= st["global_step"] < 40 and st["batches_done"] > 0, st      # killed mid-epoch, mid-run
    r = run_cli(*args, "--output", out, "--resume")
    assert "resumed from" in r.stdout + r.stderr
    return st


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(uninterrupted, tmp_path):
    out = tmp_path/"killed"
    kill_then_resume([*RESUME, "--save-every", "10"], out)
    assert_same_weights(uninterrupted/"last", out/"last")
    a, b = (json.loads((d/"summary.json").read_text()) for d in (uninterrupted, out))
    assert a["eval"] == b["eval"] and b["global_step"] == 40


def test_kills_during_checkpoint_writes_leave_usable_checkpoints(uninterrupted, tmp_path):
    out = tmp_path/"often"
    rng = random.Random(0)
    seen = []
    for attempt in range(3):   # checkpoint every step: most of the time is spent writing, so kills land mid-write
        proc = _start([*RESUME, "--save-every", "1", "--output", out, *(["--resume"] if attempt else [])])
        _kill_when(out, proc, 4 + 8 * attempt, extra_s=rng.uniform(0, 0.4))
        ck = find_checkpoint(out/"last", need_state=True)
        assert ck is not None, "no usable checkpoint after a kill"
        seen.append(json.loads((ck/"trainer_state.json").read_text())["global_step"])
        assert load_file(str(ck/"model.safetensors")) and torch.load(ck/"optimizer.pt", weights_only=True)
    assert seen == sorted(seen)
    run_cli(*RESUME, "--save-every", "1", "--output", out, "--resume")
    assert_same_weights(uninterrupted/"last", out/"last")


def test_torchrun_two_nodes_one_process_each(tmp_path):
    port = 29000 + random.Random(os.getpid()).randint(0, 5000)
    cmd = lambda rank: [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                        "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                        "-m", "distrinews.train", "--config", "quick", "--data", "synthetic:400", "--epochs", "1",
                        "--output", str(tmp_path)]
    procs = [subprocess.Popen(cmd(r), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    s = json.loads((tmp_path/"summary.json").read_text())
    assert s["world_size"] == 2


def test_bad_input_gets_one_clear_line(tmp_path):
    bad = tmp_path/"news.csv"; bad.write_text("text,label\nok,0\n,1\nfine,9\n")
    r = run_cli("train", "--config", "quick", "--data", bad, "--output", tmp_path/"o", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "news.csv: 2 invalid row(s): line 3: empty text; line 4: label 9 out of range 0..3" in r.stderr
    r = run_cli("train", "--config", "quick", "--precision", "fp8", check=False)
    assert r.returncode == 2 and "precision: must be one of" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path/"o").exists()


def test_accelerate_launch_two_processes(tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distrinews.train",
           "--config", "quick", "--data", "synthetic:400", "--epochs", "1", "--output", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert json.loads((tmp_path/"summary.json").read_text())["world_size"] == 2


# ---- failure paths (issue 16) and a run that never destroys another (issue 14) ----

def _failing_env(tmp_path):
    "Environment whose Python processes make rank 1 raise at its 3rd optimizer step (see `_train_helpers.SITECUSTOMIZE`)."
    return site_env(tmp_path, SITECUSTOMIZE, "failing_site", DISTRINEWS_FAIL_RANK="1")


FAIL_RUN = ["--config", "quick", "--data", "synthetic:1000", "--epochs", "2", "--log-every", "1"]


def test_rank_only_failure_ends_cli_job_fast_with_one_line(tmp_path):
    t0 = time.time()
    r = subprocess.run([*CLI, "train", *FAIL_RUN, "--nproc", "2", "--output", str(tmp_path/"o")], capture_output=True,
                       text=True, timeout=600, env=_failing_env(tmp_path))
    took = time.time() - t0
    assert r.returncode == 2, r.stderr[-3000:]
    assert "distrinews train: error: rank 1 failed: RuntimeError: injected failure at step 3" in r.stderr
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr, r.stderr[-3000:]
    assert took < 60, f"a rank-only failure took {took:.0f}s to end the job"   # before: a barrier held rank 0 for 30 min


def test_rank_only_failure_ends_torchrun_job_fast(tmp_path):
    t0 = time.time()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29000 + os.getpid() % 5000),
           "-m", "distrinews.cli", "train", *FAIL_RUN, "--output", str(tmp_path/"o")]   # (-m distrinews.train would run
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_failing_env(tmp_path))  # an unpatched __main__ copy)
    took = time.time() - t0
    assert r.returncode != 0 and "injected failure at step 3" in r.stdout + r.stderr
    assert took < 60, f"a rank-only failure took {took:.0f}s to end the torchrun job"


def test_rank_only_failure_ends_launch_fn_fast(tmp_path):
    cfg = load_config("quick", data="synthetic:1000", epochs=2, log_every=1, output=tmp_path)
    t0 = time.time()
    with pytest.raises(RankFailed, match="rank 1 failed: RuntimeError: injected failure on rank 1"):
        launch_fn(train_failing_on_rank1, (cfg,), 2)
    assert time.time() - t0 < 60


def test_rank_only_failure_ends_notebook_launcher_fast(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from accelerate import notebook_launcher\nfrom distrinews.config import load_config\n"
            "from _train_helpers import train_failing_on_rank1\n"
            f"cfg = load_config('quick', data='synthetic:1000', epochs=2, log_every=1, output={str(tmp_path)!r})\n"
            "notebook_launcher(train_failing_on_rank1, args=(cfg,), num_processes=2)\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    took = time.time() - t0
    # accelerate reports the failure its own way (often rank 0's broken connection): the point here is the time
    assert r.returncode != 0 and "Launching training on 2" in r.stdout, r.stderr[-3000:]
    assert took < 60, f"a rank-only failure took {took:.0f}s to end notebook_launcher"


def test_batch_4_accum_2_equals_batch_8_on_two_ranks_every_step(tmp_path):
    # 380 training rows on 2 ranks: 24 steps of 16 rows, the last one of 12 rows (6 per rank), which batch 4 x 2
    # splits into micro-batches of 4 and 2 rows: weighted by rows, the same loss as one batch of 6
    common = ["train", "--config", "quick", "--data", "synthetic:400", "--epochs", "1", "--dropout", "0",
              "--log-every", "1", "--no-group-by-length", "--nproc", "2"]
    run_cli(*common, "--batch-size", "4", "--grad-accum", "2", "--output", tmp_path/"accum")
    run_cli(*common, "--batch-size", "8", "--output", tmp_path/"plain")
    la, lp = losses(tmp_path/"accum"), losses(tmp_path/"plain")
    assert len(la) == len(lp) == 24
    for step, (a, b) in enumerate(zip(la, lp), 1): assert a == pytest.approx(b, rel=1e-4, abs=1e-5), f"step {step}: {a} vs {b}"


def test_resume_with_another_precision_is_refused_in_one_line(tmp_path):
    out = tmp_path/"o"
    run_cli("train", "--config", "quick", "--data", "synthetic:400", "--epochs", "1", "--nproc", "2", "--output", out)
    st = json.loads((out/"last"/"trainer_state.json").read_text())
    assert (st["precision"], st["per_device_batch"], st["effective_grad_accum"]) == ("fp32", 32, 1)
    # found inside the ranks only (the parent's preflight does not read last/): the same one line, exit 2
    r = run_cli("train", "--config", "quick", "--data", "synthetic:400", "--epochs", "1", "--nproc", "2", "--output", out,
                "--resume", "--precision", "bf16", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"distrinews train: error: resume: {out/'last'} was written with other settings, which fix the data order and the "
        "schedule: precision: fp32 → bf16. Resume with the settings it was written with, or start anew with --overwrite "
        "(or another --output)")


def test_resume_reuses_saved_batch_without_probing(tmp_path, monkeypatch):
    import distrinews.train as T
    cfg = load_config("quick", data="synthetic:200", epochs=1, nproc=1, output=tmp_path, log_every=100)
    T.train(cfg, progress=False)
    def no_probe(*a, **k): raise AssertionError("fit_batch_size must not run on resume")
    monkeypatch.setattr(R, "fit_batch_size", no_probe)   # build_model_and_data (in the run module) calls it
    s = T.train(load_config("quick", data="synthetic:200", epochs=1, nproc=1, output=tmp_path, log_every=100, resume=True),
                progress=False)
    assert (s["per_device_batch"], s["grad_accum"]) == (32, 1)


def test_second_run_into_same_output_is_refused_unless_asked(tmp_path):
    args = ["train", "--config", "quick", "--data", "synthetic:200", "--epochs", "1", "--nproc", "1", "--log-every", "1",
            "--output", tmp_path]
    r = run_cli(*args)
    # not a terminal: one plain line per log event, no tqdm redraws, no "Writing model shards" bars
    steps = [l for l in r.stdout.splitlines() if l.startswith("step ") and "loss" in l and "eval" not in l]
    assert len(steps) == len(losses(tmp_path)) and len(set(steps)) == len(steps), r.stdout
    assert "Writing model shards" not in r.stdout + r.stderr and "\r" not in r.stderr
    before = weights(tmp_path/"best")
    r = run_cli(*args, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"output: {tmp_path} already holds a run" in r.stderr and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert_same_weights_dict(before, weights(tmp_path/"best"))
    run_cli(*args, "--overwrite")
    assert json.loads((tmp_path/"summary.json").read_text())["config"]["overwrite"] is True


def assert_same_weights_dict(wa, wb):
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_too_few_rows_per_class_gets_one_line_before_training(tmp_path):
    one_each = tmp_path/"one.csv"
    one_each.write_text("text,label\nwar news,0\nfootball,1\nstocks,2\nchips,3\n")
    r = run_cli("train", "--config", "quick", "--data", one_each, "--output", tmp_path/"o", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "one.csv: a stratified train/eval split needs >= 2 rows per class" in r.stderr
    assert not (tmp_path/"o").exists()
    dropped = tmp_path/"dropped.csv"
    dropped.write_text("text,label\nwar news,0\n,0\nfootball,1\nx,9\nstocks,2\n,2\nchips,3\n,3\n")
    r = run_cli("train", "--config", "quick", "--data", dropped, "--drop-invalid", "--output", tmp_path/"o", check=False)
    assert r.returncode == 2 and "needs >= 2 rows per class" in r.stderr and "Traceback" not in r.stderr


def test_eval_with_a_checkpoint_typo_says_no_such_folder(tmp_path):
    r = run_cli("eval", "--checkpoint", tmp_path/"runs"/"quik"/"best", "--data", "synthetic:20", check=False)
    assert r.returncode == 2 and "no such checkpoint folder" in r.stderr
    assert "--model" not in r.stderr and "Traceback" not in r.stderr


def test_fractional_epochs_flag_is_rejected(tmp_path):
    r = run_cli("train", "--config", "quick", "--epochs", "1.5", "--output", tmp_path/"o", check=False)
    assert r.returncode == 2 and "epochs: expected an integer, got '1.5'" in r.stderr


# ---- issue 24: a resume continues exactly or is refused; the probe measures training; metrics.jsonl after a resume ----

def _news_csv(path, n, seed=0):
    "A csv of `n` synthetic news rows (edited in place by the tests: the settings stay, the rows change)."
    synthetic_news(n, seed=seed).to_csv(str(path), index=False)
    return path


def _snapshot(folder):
    "Every file under `folder`, with a hash of its content."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_resume_refuses_each_changed_setting_or_row_in_one_line_and_writes_nothing(tmp_path):
    csv, out = _news_csv(tmp_path/"news.csv", 400), tmp_path/"o"
    base = dict(data=str(csv), epochs=1, max_steps=4, nproc=1, log_every=1, save_every=3, output=str(out))
    T.train(load_config("quick", **base), progress=False)
    before, saved = _snapshot(out), json.loads((out/"last"/"trainer_state.json").read_text())["fingerprint"]
    changes = dict(model=str(tmp_path/"other-model"), data=str(tmp_path/"other.csv"), eval_data=str(csv), val_fraction=0.1,
                   max_train_samples=100, max_length=32, drop_invalid=True, group_by_length=False, seed=43, batch_size=16,
                   grad_accum=2, strategy="fsdp", epochs=2, max_steps=8, lr=1e-3, weight_decay=0.1, warmup_ratio=0.2,
                   precision="bf16", max_grad_norm=0.5, dropout=0.2, grad_checkpointing=True, compile=True, eval_every=2, tf32=True,
                   best_metric="loss", patience=2)
    rows = ("train_rows", "train_rows_sha256", "eval_rows", "eval_rows_sha256")
    # every recorded field is changed below, one at a time (lora: a LoRA run is refused on resume before its fingerprint)
    assert set(saved) == {*changes, "lora", "world_size", *rows}

    def refused(cfg) -> str:
        with pytest.raises(ConfigError) as e: T.train(cfg, progress=False)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"resume: {out/'last'} was written with other settings"), msg
        assert _snapshot(out) == before, "a refused resume changed the run folder"
        return msg

    for field, new in changes.items():
        msg = refused(load_config("quick", **{**base, field: new}, resume=True))
        assert f"{field}: {saved[field]} → {new}" in msg and msg.count("→") == 1, msg
    _news_csv(csv, 400, seed=1)                                    # the same file and settings, other rows
    msg = refused(load_config("quick", **base, resume=True))
    assert f"train_rows_sha256: {saved['train_rows_sha256']} → " in msg and "eval_rows_sha256" in msg and "train_rows:" not in msg
    _news_csv(csv, 300)                                            # fewer rows
    assert f"train_rows: 380 → 285; " in refused(load_config("quick", **base, resume=True))
    _news_csv(csv, 400)                                            # the original rows: the resume is accepted again
    # the number of processes, through the CLI: exit 2 and the same one line
    r = run_cli("train", "--config", "quick", "--data", csv, "--epochs", 1, "--max-steps", 4, "--save-every", 3, "--log-every", 1,
                "--nproc", 2, "--output", out, "--resume", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("distrinews train: error: resume: ") and "world_size: 1 → 2" in last and last.count("→") == 1, last
    assert _snapshot(out) == before


def test_resume_when_the_data_changed_under_an_old_checkpoint_ends_in_one_line_never_hangs(tmp_path):
    # a checkpoint without a fingerprint (written before there was one), then the data file edited in place: 68 rows
    # leave 64 training rows, 2 micro-batches of 32, while last/ says 2 (nothing left: the old loop spun) or 3 are done
    csv, out = _news_csv(tmp_path/"news.csv", 400), tmp_path/"o"
    args = ["train", "--config", "quick", "--data", csv, "--epochs", 1, "--max-steps", 4, "--nproc", 1, "--output", out]
    run_cli(*args)
    _news_csv(csv, 68)
    state = out/"last"/"trainer_state.json"
    for done in (2, 3):
        st = json.loads(state.read_text())
        st.pop("fingerprint", None)
        st.update(global_step=done, batches_done=done, epoch=0)
        state.write_text(json.dumps(st))
        r = run_cli(*args, "--resume", check=False, timeout=120)     # the old code: no end (2) or a traceback (3)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert (f"data: an epoch has 2 micro-batch(es) of 32 rows, but {out/'last'} is at micro-batch {done} of epoch 0"
                in r.stderr.strip().splitlines()[-1]), r.stderr[-2000:]


def test_batch_probe_runs_in_train_mode_on_a_loaded_folder(tmp_path):
    folder = save_model(*load_model("tiny"), tmp_path/"tiny")
    model, _ = load_model(str(folder))
    assert not model.training                 # from_pretrained: eval mode (`tiny` is built in train mode: it hides this)
    enable_checkpointing(model)     # what --grad-checkpointing does; transformers checkpoints only in train mode
    seen = []
    for layer in model.distilbert.transformer.layer:   # (the recompute runs the layer's inner modules: their hooks see it)
        layer.attention.register_forward_hook(lambda m, i, o: seen.append(m.training))
    cfg = Config(model=str(folder), data="synthetic:100", batch_size=8, precision="fp32")
    assert R.fit_batch_size(model, cfg, DistEnv(), 16, "fp32", probe=R._probe) == (8, 1)
    assert seen == [True] * 4, seen           # each of the 2 layers in train mode, and again when the backward recomputes it
    assert not model.training                 # handed back in the mode it came in


def test_metrics_after_kill_and_resume_have_increasing_steps_and_the_uninterrupted_losses(uninterrupted, tmp_path):
    out = tmp_path/"killed"
    kill_then_resume([*RESUME, "--save-every", "7"], out, extra_s=0.5)   # saves at 7, 14, ...; logs every 5: windows cut
    recs = [json.loads(l) for l in (out/"metrics.jsonl").read_text().splitlines()]
    for event in ("train", "eval"):
        steps = [r["step"] for r in recs if r["event"] == event]
        assert steps == sorted(set(steps)), f"{event} steps repeat or go back: {steps}"
    assert losses(out) == losses(uninterrupted)   # the first log after the resume averages the same steps (window saved)
    assert_same_weights(uninterrupted/"last", out/"last")


def test_probe_reserves_adams_moments_not_a_copy_of_ddps_buckets(monkeypatch):
    "With `gradient_as_bucket_view=True` the gradients live in DDP's buckets: the probe sets aside AdamW's 2 moments, not 3 copies."
    from distrinews.ddp import DDPStrategy
    import inspect
    assert "gradient_as_bucket_view=True" in inspect.getsource(DDPStrategy.wrap)   # what the reserve relies on
    model = load_model("tiny")[0]
    sizes, real = [], torch.empty
    def empty(*size, **kw):                   # record what the probe allocates (its first allocation is the reserve)
        t = real(*size, **kw)
        sizes.append(t.numel())
        return t
    monkeypatch.setattr(torch, "empty", empty)
    assert R._probe(model, 2, 8, DistEnv(), "fp32")
    assert sizes[0] == 2 * sum(p.numel() for p in model.parameters()), (sizes[0], sum(p.numel() for p in model.parameters()))
