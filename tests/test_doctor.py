"""`distrinews doctor`: passes on this CPU machine (2 gloo ranks, a real training run, a checkpoint round trip),
prints exactly one JSON object with `--json`, fails with a clear line and a non-zero exit code when a check fails,
and ends within its deadline when a rank never answers (a broken NCCL/peer-to-peer setup, played here with gloo)."""
from __future__ import annotations
import json, os, signal, subprocess, time

import pytest

from helpers import CLI, site_env


def doctor(*argv: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    "Run the real CLI; on a timeout, end it and every process it started (its session) before failing the test."
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", **(env or {})}
    p = subprocess.Popen([*CLI, "doctor", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"distrinews doctor {' '.join(argv)} gave no answer in {timeout:g} s")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_doctor_passes_on_this_machine_as_json():
    r = doctor("--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads(r.stdout)                  # the whole of stdout is one JSON object: no log line before it
    assert rep["ok"] is True
    assert [c["name"] for c in rep["checks"]] == ["launch", "process group", "training", "checkpoint"]
    assert all(c["ok"] for c in rep["checks"]), rep["checks"]
    assert "2 ranks, gloo on cpu" in rep["checks"][1]["detail"]
    assert "identical weights on 2 ranks" in rep["checks"][2]["detail"]
    assert rep["hardware"]["kind"] == "cpu" and isinstance(rep["hardware"]["native_bf16"], bool)
    assert rep["versions"]["torch"] and rep["environment"]["offline_mode"] is True
    precision = rep["checks"][2]["detail"].split(" in ")[1].split()[0]
    assert precision == ("bf16" if rep["hardware"]["native_bf16"] else "fp32")   # what auto picks on this CPU
    assert "process(es) on cpu" in r.stderr     # the ranks' training log went to stderr, not into the JSON


@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.parametrize("reachable", [False, True])
def test_environment_reports_what_the_probe_says(monkeypatch, offline, reachable):
    "hub_reachable follows the probe both ways; offline, the probe is not even asked (and the answer is False)."
    import distrinews.data
    from distrinews.cli import doctor_environment
    asked = []
    monkeypatch.setattr(distrinews.data, "hub_reachable", lambda host, timeout=3.0: asked.append(host) or reachable)
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"): monkeypatch.delenv(v, raising=False)
    if offline: monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = doctor_environment()
    assert env["offline_mode"] is offline
    assert env["hub_reachable"] is (reachable and not offline)
    assert asked == ([] if offline else [env["hub"]])


def test_a_failing_check_exits_1_with_a_fail_line(tmp_path):
    blocker = tmp_path/"a-file"
    blocker.write_text("not a folder")
    r = doctor("--workdir", str(blocker/"doctor"))     # the checks' run cannot be created under a regular file
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    fail = [l for l in lines if l.startswith("FAIL launch:")]
    assert fail and "Error" in fail[0] and "a-file" in fail[0], lines
    assert any(l.startswith("FAIL training:") for l in lines) and not any(l.startswith("PASS") for l in lines)
    assert "Traceback" not in r.stdout + r.stderr


def test_bad_timeout_is_one_line():
    r = doctor("--timeout", "0")
    assert (r.returncode, r.stderr.strip()) == (2, "distrinews doctor: error: --timeout: must be > 0 seconds, got 0")


# Every Python process of the test imports this `sitecustomize.py` (its folder is first on PYTHONPATH):
# DISTRINEWS_HANG=allreduce: rank 1 never joins an all-reduce (its call sleeps), as a peer with a broken NCCL path;
# DISTRINEWS_HANG=rank: every launched rank sleeps before it even forms the group (no collective to time out).
HANG_SITE = '''
import os, time
if os.environ.get("DISTRINEWS_HANG") == "allreduce":
    import torch.distributed as dist
    _orig = dist.all_reduce
    def all_reduce(*args, **kw):
        if dist.get_rank() == 1: time.sleep(3600)
        return _orig(*args, **kw)
    dist.all_reduce = all_reduce
elif os.environ.get("DISTRINEWS_HANG") == "rank":
    import distrinews.cli
    def _doctor_rank(*args): time.sleep(3600)
    distrinews.cli._doctor_rank = _doctor_rank
'''


def _hang_env(tmp_path, how: str) -> dict:
    return site_env(tmp_path, HANG_SITE, "hang_site", DISTRINEWS_HANG=how)


def _fail_lines(r) -> dict[str, str]:
    return {l.split(":")[0][5:]: l for l in r.stdout.splitlines() if l.startswith("FAIL ")}


def test_a_rank_that_never_joins_the_allreduce_fails_within_the_deadline(tmp_path):
    "--timeout 30: the ranks' group times out after 10 s, rank 0's all-reduce raises, the launch fails with that error."
    t0 = time.monotonic()
    r = doctor("--timeout", "30", env=_hang_env(tmp_path, "allreduce"), timeout=150)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    fails = _fail_lines(r)
    assert set(fails) == {"launch", "process group", "training", "checkpoint"}, r.stdout
    assert "rank 0 failed" in fails["launch"] or "no answer in 30 s" in fails["launch"], fails["launch"]
    assert "Traceback" not in r.stdout
    assert took < 120, f"the doctor took {took:.0f} s with a missing peer"   # before: 30 minutes (torch's default timeout)


def test_the_watchdog_fails_a_launch_that_never_answers(tmp_path):
    "Ranks that hang outside any collective: after --timeout s the launch is `FAIL launch: no answer in N s`."
    t0 = time.monotonic()
    r = doctor("--timeout", "20", env=_hang_env(tmp_path, "rank"), timeout=150)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    fails = _fail_lines(r)
    assert fails["launch"].startswith("FAIL launch: no answer in 20 s"), r.stdout
    assert set(fails) == {"launch", "process group", "training", "checkpoint"}, r.stdout
    assert took < 100, f"the doctor took {took:.0f} s with hung ranks"
