"""`distrinews doctor`: passes on this CPU machine (2 gloo ranks, a real training run, a checkpoint round trip),
and fails with a clear line and a non-zero exit code when a check fails."""
from __future__ import annotations
import json, os, subprocess, sys
from pathlib import Path


def doctor(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distrinews.cli", "doctor", *argv], capture_output=True, text=True,
                          timeout=300, env=env)


def test_doctor_passes_on_this_machine_as_json():
    r = doctor("--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["ok"] is True
    assert [c["name"] for c in rep["checks"]] == ["launch", "process group", "training", "checkpoint"]
    assert all(c["ok"] for c in rep["checks"]), rep["checks"]
    assert "2 ranks, gloo on cpu" in rep["checks"][1]["detail"]
    assert "identical weights on 2 ranks" in rep["checks"][2]["detail"]
    assert rep["hardware"]["kind"] == "cpu" and isinstance(rep["hardware"]["native_bf16"], bool)
    assert rep["versions"]["torch"] and rep["environment"]["hub_reachable"] is False   # offline here
    precision = rep["checks"][2]["detail"].split(" in ")[1].split()[0]
    assert precision == ("bf16" if rep["hardware"]["native_bf16"] else "fp32")   # what auto picks on this CPU


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
