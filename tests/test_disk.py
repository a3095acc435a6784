"""A full or read-only disk under a real run: one line naming the folder and the space left, exit 2, the previous
checkpoint kept (issue 30, item 7). The disk is a real 3 MiB tmpfs (or a read-only one), mounted in a private
user+mount namespace (`unshare -Urm`); where the kernel allows no such namespace those tests skip."""
import errno, re, shlex, shutil, subprocess

import pytest

from distrinews.model import DiskError, check_writable, save_errors
from helpers import CLI


def _can_unshare() -> bool:
    if not shutil.which("unshare"): return False
    r = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /tmp && touch /tmp/x"],
                       capture_output=True, timeout=20)
    return r.returncode == 0


needs_ns = pytest.mark.skipif(not _can_unshare(), reason="no user+mount namespaces here (unshare -Urm)")
TRAIN = [*CLI, "train", "--config", "quick", "--data", "synthetic:400", "--nproc", "1",
         "--max-steps", "4", "--save-every", "2", "--log-every", "2"]


def _in_small_disk(tmp_path, size: str, then: str, read_only: bool = False, cmd_prefix: str = "", extra=()):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size={size} tmpfs {mnt} && " + (f"mount -o remount,ro {mnt} && " if read_only else "")
              + cmd_prefix + shlex.join([*TRAIN, *extra, "--output", str(mnt / "o")]) + f"; rc=$?; {then}; exit $rc")
    return subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, timeout=180), mnt


@needs_ns
def test_disk_full_during_a_save_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    # 16 MiB: room for what the run says it writes (it refuses up front otherwise), until another program fills the disk
    # right after the first last/ (weights 0.7 MB + optimizer 1.4 MB) is written: the next save finds no space
    mnt = tmp_path / "disk"
    state = f"{mnt}/o/last/trainer_state.json"
    filler = f"(for i in $(seq 6000); do [ -f {state} ] && break; sleep 0.02; done; cat /dev/zero > {mnt}/filler 2>/dev/null) & "   # at most 2 min
    r, _ = _in_small_disk(tmp_path, "16m", f"wait; grep -h global_step {state}", cmd_prefix=filler,
                          extra=["--max-steps", "400", "--epochs", "50"])
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]   # before: exit 1, a 48-line RuntimeError
    assert re.match(rf"distrinews train: error: save: could not write {mnt}/o/(last|best): no space left on device \(", err[-1]), err[-1]
    assert "free there); the previous checkpoint is kept" in err[-1]
    assert re.search(r'"global_step": \d+', r.stdout)       # the previous last/ is intact and readable


@needs_ns
def test_read_only_output_is_refused_before_any_work(tmp_path):
    r, mnt = _in_small_disk(tmp_path, "1m", "true", read_only=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]   # before: a 24-line OSError
    assert r.stderr.strip().splitlines()[-1] == (f"distrinews train: error: output: cannot write into {mnt}/o: "
                                                 "Read-only file system (1.0 MiB free there); choose another --output")
    assert "distrinews: 1 process(es)" not in r.stdout + r.stderr     # refused before the run started


def test_save_errors_names_the_folder_for_each_way_a_disk_says_full(tmp_path):
    for e in (OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EROFS, "Read-only file system"),
              RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')):
        with pytest.raises(DiskError, match=f"save: could not write {tmp_path}/best: "):
            with save_errors(tmp_path / "best"): raise e
    with pytest.raises(ValueError, match="not a disk problem"):
        with save_errors(tmp_path / "best"): raise ValueError("not a disk problem")
    check_writable(tmp_path / "new" / "out")                  # created, written, left empty
    assert list((tmp_path / "new" / "out").iterdir()) == []
