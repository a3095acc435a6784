"""DDP utilities without a GPU: device binding with a faked GPU count, the fork guard, no collective on error paths."""
import os, subprocess, sys
import pytest
import torch
import torch.distributed as dist

from distrinews.ddp import abort_distributed, check_can_fork, cleanup_distributed, default_nproc, main_process_first, setup_distributed


@pytest.fixture
def fake_gpus(monkeypatch):
    "Pretend this machine has `n` GPUs; record set_device / init_process_group calls instead of running them."
    calls = {"set_device": [], "init": []}
    def with_n(n, **env):
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"): monkeypatch.delenv(k, raising=False)
        for k, v in env.items(): monkeypatch.setenv(k, str(v))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(d))
        monkeypatch.setattr(torch, "set_num_threads", lambda n: None)     # leave the test process's threads alone
        monkeypatch.setattr(dist, "is_initialized", lambda: False)
        monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls["init"].append((backend, kw["rank"], kw["world_size"])))
        return calls
    return with_n


def test_one_gpu_per_process_binds_cuda_local_rank_and_nccl(fake_gpus):
    calls = fake_gpus(2, RANK=1, WORLD_SIZE=2, LOCAL_RANK=1, LOCAL_WORLD_SIZE=2)
    env = setup_distributed()
    assert (env.device, env.backend, env.rank, env.world_size) == (torch.device("cuda", 1), "nccl", 1, 2)
    assert calls["set_device"] == [torch.device("cuda", 1)] and calls["init"] == [("nccl", 1, 2)]


def test_more_processes_than_gpus_says_so_and_uses_gloo(fake_gpus, capsys):
    calls = fake_gpus(1, RANK=0, WORLD_SIZE=2, LOCAL_RANK=0, LOCAL_WORLD_SIZE=2)
    env = setup_distributed()
    assert (env.device.type, env.backend) == ("cpu", "gloo")
    assert calls["set_device"] == [] and calls["init"] == [("gloo", 0, 2)]
    out = capsys.readouterr().out
    assert "2 processes but 1 GPU(s)" in out and "gloo" in out and "share" not in out


def test_local_world_size_unset_does_not_fall_back_to_world_size(fake_gpus):
    # a 2-node job with 2 GPUs per node, launched without LOCAL_WORLD_SIZE: WORLD_SIZE (4) counts both nodes
    calls = fake_gpus(2, RANK=3, WORLD_SIZE=4, LOCAL_RANK=1)
    env = setup_distributed()
    assert (env.device, env.backend) == (torch.device("cuda", 1), "nccl")
    assert calls["init"] == [("nccl", 3, 4)]


def test_no_gpu_single_process_forms_no_group(fake_gpus):
    calls = fake_gpus(0)
    env = setup_distributed()
    assert (env.device.type, env.backend, env.world_size) == ("cpu", None, 1) and calls["init"] == []


def test_check_can_fork_stops_with_the_fix_when_cuda_is_initialized(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="restart the kernel and run the launch cell first"): check_can_fork(2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    check_can_fork(2)


class _Shell:
    "What `IPython.get_ipython()` returns in a notebook; its repr names its module (accelerate's Colab test reads it)."
    def __init__(self, module): self.module = module
    def __str__(self): return f"<{self.module}.Shell object>"


@pytest.mark.parametrize("where,gpus,nproc,forks", [("google.colab._shell", 1, 2, False),   # Colab 1 GPU: runs in the kernel
                                                    ("google.colab._shell", 1, 1, False),
                                                    ("ipykernel.zmqshell", 2, 2, True),     # Kaggle 2xT4: forks
                                                    ("ipykernel.zmqshell", 2, 1, False)])   # a launch of 1: no fork
def test_check_can_fork_only_where_the_launcher_forks(monkeypatch, where, gpus, nproc, forks):
    "Colab's second launch cell: the first launch ran in the kernel and initialized CUDA; the check must let it run."
    IPython = pytest.importorskip("IPython")
    for k in [k for k in os.environ if k.startswith("KAGGLE")]: monkeypatch.delenv(k)
    monkeypatch.setattr(IPython, "get_ipython", lambda: _Shell(where))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)     # the first launch bound cuda:0 in the kernel
    if forks:
        with pytest.raises(RuntimeError, match="restart the kernel"): check_can_fork(nproc)
    else: check_can_fork(nproc)


def test_importing_every_module_leaves_cuda_uninitialized():
    "An import that touches CUDA breaks every later fork (accelerate #3524): a fresh process imports every module."
    code = """
import importlib, pkgutil, torch
inits = []
torch.cuda._lazy_init = lambda: inits.append(1)     # every call that would create a CUDA context goes through it
import distrinews
for m in pkgutil.iter_modules(distrinews.__path__): importlib.import_module(f"distrinews.{m.name}")
assert not inits and not torch.cuda.is_initialized(), f"importing distrinews touched CUDA ({len(inits)} calls)"
print("ok", len(list(pkgutil.iter_modules(distrinews.__path__))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]


@pytest.mark.parametrize("gpus,nproc", [(0, 2), (1, 1), (2, 2), (4, 4)])
def test_default_nproc_is_one_per_gpu_or_two_on_cpu(monkeypatch, gpus, nproc):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert default_nproc() == nproc


@pytest.fixture
def fake_group(monkeypatch):
    "A pretend 2-rank group on rank 0 that records barrier/destroy calls."
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: calls.append("destroy"))
    return calls


def test_main_process_first_has_no_barrier_on_the_error_path(fake_group):
    with pytest.raises(ValueError):
        with main_process_first(): raise ValueError("bad data on rank 0")
    assert fake_group == []                      # before: rank 0 waited at a barrier the others never reach
    with main_process_first(): pass
    assert fake_group == ["barrier"]


def test_abort_has_no_collective(fake_group, monkeypatch):
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    abort_distributed()
    assert fake_group == []                      # gloo: the process's exit closes the connections
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(dist.distributed_c10d, "_abort_process_group", lambda *a: fake_group.append("abort"))
    abort_distributed()
    assert fake_group == ["abort"]
    cleanup_distributed()                        # the success path: barrier, then leave
    assert fake_group == ["abort", "barrier", "destroy"]


# ---------------------------------------------------------------- a peer that never answers (issue 24, item 6)

def test_collective_timeout_is_configurable(monkeypatch):
    from distrinews.ddp import DEFAULT_TIMEOUT_S, collective_timeout
    monkeypatch.delenv("DISTRINEWS_TIMEOUT_S", raising=False)
    assert collective_timeout() == DEFAULT_TIMEOUT_S < 1800 and collective_timeout(7) == 7.0
    monkeypatch.setenv("DISTRINEWS_TIMEOUT_S", "12.5")
    assert collective_timeout() == 12.5 and collective_timeout(3) == 3.0    # an explicit value wins
    monkeypatch.setenv("DISTRINEWS_TIMEOUT_S", "-1")
    with pytest.raises(ValueError, match="expected a number of seconds > 0, got '-1'"): collective_timeout()


def test_setup_distributed_gives_the_group_the_timeout(fake_gpus, monkeypatch):
    import datetime
    seen = []
    fake_gpus(0, RANK=0, WORLD_SIZE=2, LOCAL_RANK=0, DISTRINEWS_TIMEOUT_S=42)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.append(kw["timeout"]))
    setup_distributed()
    setup_distributed(timeout_s=5)
    assert seen == [datetime.timedelta(seconds=42), datetime.timedelta(seconds=5)]


def test_a_two_rank_run_with_a_missing_peer_ends_within_its_deadline(tmp_path):
    "DISTRINEWS_TIMEOUT_S=10: rank 0's all-reduce gives up after 10 s, the job ends with one line (not after 30 min)."
    import os, signal, subprocess, time
    from _train_helpers import SITECUSTOMIZE      # rank 1 sleeps at its 3rd optimizer step instead of joining the all-reduce
    from helpers import CLI, site_env
    env = site_env(tmp_path, SITECUSTOMIZE, DISTRINEWS_MISSING_RANK="1", DISTRINEWS_TIMEOUT_S="10", TOKENIZERS_PARALLELISM="false")
    cmd = [*CLI, "train", "--config", "quick", "--data", "synthetic:1000", "--epochs", "2",
           "--log-every", "1", "--nproc", "2", "--output", str(tmp_path/"o")]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try: out, err = p.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("a 2-rank run with a missing peer was still waiting after 150 s")
    took = time.monotonic() - t0
    assert p.returncode == 2, err[-3000:]
    line = [l for l in err.splitlines() if l.startswith("distrinews train: error:")]
    assert line and "rank 0 failed" in line[0] and "Timed out" in line[0], err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert took < 120, f"the run took {took:.0f} s to end"


# ---------------------------------------------------------------- the flat loop of chapter 03 (issue 25)

def _launch_flat_loop(out_dir, nproc=2, global_batch=32):
    "Run `ddp_train_loop` as the chapter does: `notebook_launcher`, real gloo processes; return the ranks' records."
    import json, subprocess, sys
    code = ("from accelerate import notebook_launcher\nfrom distrinews.ddp import ddp_train_loop\n"
            f"notebook_launcher(ddp_train_loop, args=({str(out_dir)!r}, {global_batch}), num_processes={nproc})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=out_dir)   # the package on sys.path, not ./distrinews
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((out_dir/f"rank{i}.json").read_text()) for i in range(nproc)]


def test_flat_loop_two_gloo_ranks_keep_identical_weights_and_follow_one_rank_with_twice_the_batch(tmp_path):
    "2 ranks x batch b (DDP, no_sync accumulation, set_epoch over 2 epochs) == 1 process x batch 2b, step by step."
    from distrinews.ddp import plain_train_loop
    ranks = _launch_flat_loop(tmp_path, nproc=2, global_batch=32)           # 2 ranks x 8 rows x 2 micro-batches
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"]                        # bit-identical after 16 steps
    assert ranks[0]["losses"] != ranks[1]["losses"]                          # the ranks did read different rows
    plain = plain_train_loop(global_batch=32)                                # 1 process x 16 rows x 2 micro-batches
    mean = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])]
    assert len(mean) == len(plain["losses"]) == 16
    assert mean == pytest.approx(plain["losses"], rel=1e-4, abs=1e-5)
    assert "(ranks 0..1), mean" in ranks[0]["log"][-1] and ranks[0]["log"] == ranks[1]["log"]


def test_flat_loop_on_one_process_is_the_plain_loop(tmp_path, monkeypatch):
    "Colab's case: notebook_launcher calls the function once in the kernel, without RANK/WORLD_SIZE: no group, no DDP."
    import json
    from distrinews.ddp import ddp_train_loop, plain_train_loop
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"): monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)            # leave the test process's threads alone
    ddp_train_loop(str(tmp_path), 32, 2, 1)                                  # one epoch
    r = json.loads((tmp_path/"rank0.json").read_text())
    plain = plain_train_loop(global_batch=32, epochs=1)
    assert r["world_size"] == 1 and not dist.is_initialized()
    assert r["losses"] == pytest.approx(plain["losses"], rel=1e-6) and r["weights"] == plain["weights"]
