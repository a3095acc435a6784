"""kill -9 of one rank of a real 2-process run: the job ends fast, and its one line names the rank that died and its
signal, not the peer whose connection it reset (issue 30, item 8)."""
import sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _train_helpers import SITECUSTOMIZE  # noqa: E402
from helpers import run_cli, site_env  # noqa: E402


def test_kill_9_of_rank_1_names_rank_1_and_its_signal(tmp_path):
    env = site_env(tmp_path, SITECUSTOMIZE, DISTRINEWS_KILL_RANK="1")
    t0 = time.time()
    r = run_cli("train", "--config", "quick", "--data", "synthetic:1000", "--epochs", "1", "--log-every", "1", "--nproc", "2",
                "--output", tmp_path / "o", check=False, timeout=300, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [l for l in r.stderr.splitlines() if l.startswith("distrinews train: error:")]   # (a leaked-semaphore warning may follow)
    assert len(errors) == 1, r.stderr[-3000:]
    last = errors[0]
    # before: "rank 0 failed: RuntimeError: ... Connection reset by peer"
    assert last.startswith("distrinews train: error: rank 1 died first: killed by signal SIGKILL (pid "), last
    assert time.time() - t0 < 120
