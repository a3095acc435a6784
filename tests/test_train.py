"""Real multi-process (gloo, CPU) checks of the trainer: identical weights across ranks, 1 vs 2 ranks,
exact metrics, exact resume after SIGKILL, crash-safe checkpoints, torchrun multi-node."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file

from distrinews.config import load_config
from distrinews.train import RankFailed, find_checkpoint, launch_fn

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import SITECUSTOMIZE, train_failing_on_rank1, train_with_param_hash  # noqa: E402

CLI = [sys.executable, "-m", "distrinews.cli"]


def run_cli(*args, check=True, **kw):
    r = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600, **kw)
    if check and r.returncode != 0: raise AssertionError(f"exit {r.returncode}\nSTDOUT:\n{r.stdout[-3000:]}\nSTDERR:\n{r.stderr[-5000:]}")
    return r


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


def kill_then_resume(args, out) -> dict:
    "Start `distrinews <args> --output out`, SIGKILL it once `last/` holds step >= 10, check it died mid-epoch and"
    " mid-run, then `--resume` it to the end; the killed run's saved trainer state."
    proc = _start([*args, "--output", out])
    _kill_when(out, proc, 10)
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
    site = tmp_path/"failing_site"
    site.mkdir()
    (site/"sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "DISTRINEWS_FAIL_RANK": "1",
            "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


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
    assert r.stderr.strip().splitlines()[-1] == (f"distrinews train: error: precision: {out/'last'} was trained in fp32, "
                                                 "this run would use bf16; resume with --precision fp32")


def test_resume_reuses_saved_batch_without_probing(tmp_path, monkeypatch):
    import distrinews.train as T
    cfg = load_config("quick", data="synthetic:200", epochs=1, nproc=1, output=tmp_path, log_every=100)
    T.train(cfg, progress=False)
    def no_probe(*a, **k): raise AssertionError("fit_batch_size must not run on resume")
    monkeypatch.setattr(T, "fit_batch_size", no_probe)
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
