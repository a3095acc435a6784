"""A resume never starts from scratch over a run, never over a damaged last/, and refuses every setting that changes
what is trained (issue 30, items 5 and 6). Real runs (tiny model, one process), real damaged files."""
import hashlib, json, shutil
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

import distrinews.train as T
from distrinews.config import Config, ConfigError, load_config
from distrinews.ddp import DistEnv


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


BASE = dict(data="synthetic:400", epochs=1, max_steps=4, nproc=1, log_every=1, save_every=2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "o"
    T.train(load_config("quick", **BASE, output=str(out)), progress=False)
    return out


def _truncate(p): p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


DAMAGES = {"no weights": lambda l: (l / "model.safetensors").unlink(),
           "no trainer_state.json": lambda l: (l / "trainer_state.json").unlink(),
           "no last/": lambda l: shutil.rmtree(l),
           "truncated optimizer.pt": lambda l: _truncate(l / "optimizer.pt"),
           "truncated state.pt": lambda l: _truncate(l / "state.pt"),
           "truncated trainer_state.json": lambda l: _truncate(l / "trainer_state.json"),
           "truncated model.safetensors": lambda l: _truncate(l / "model.safetensors"),
           "no state.pt": lambda l: (l / "state.pt").unlink()}


@pytest.mark.parametrize("damage", DAMAGES)
def test_resume_over_a_damaged_last_is_refused_and_touches_nothing(run_dir, tmp_path, damage):
    out = tmp_path / "o"
    shutil.copytree(run_dir, out)
    DAMAGES[damage](out / "last")
    before = _snapshot(out)
    with pytest.raises(ConfigError) as e:      # before: "no checkpoint ... starting from scratch", a new run over the old
        T.train(load_config("quick", **BASE, output=str(out), resume=True), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("resume: ") and str(out / "last") in msg, msg
    assert _snapshot(out) == before, "a refused resume changed the run folder"


def test_resume_into_an_empty_folder_still_starts_fresh(tmp_path):
    s = T.train(load_config("quick", **{**BASE, "max_steps": 2}, output=str(tmp_path / "o"), resume=True), progress=False)
    assert s["global_step"] == 2


@pytest.mark.parametrize("change", [dict(best_metric="loss"), dict(dropout=0.2), dict(max_grad_norm=0.5),
                                    dict(patience=2), dict(eval_every=1)], ids=lambda c: next(iter(c)))
def test_resume_with_a_setting_that_changes_training_is_refused(run_dir, tmp_path, change):
    out = tmp_path / "o"
    shutil.copytree(run_dir, out)
    before = _snapshot(out)
    (k, v), = change.items()
    with pytest.raises(ConfigError, match=f"{k}: .* → {v}"):   # before: accepted, exit 0, other weights or another best/
        T.train(load_config("quick", **BASE, output=str(out), resume=True, **change), progress=False)
    assert _snapshot(out) == before


def test_every_config_field_is_fingerprinted_or_listed_as_safe():
    from distrinews.checkpoint import RESUME_SAFE, resume_fields, settings_fingerprint
    names = {f.name for f in fields(Config)}
    assert set(RESUME_SAFE) <= names, f"stale names in RESUME_SAFE: {set(RESUME_SAFE) - names}"
    assert set(resume_fields()) | set(RESUME_SAFE) == names
    assert all(isinstance(why, str) and why for why in RESUME_SAFE.values())

    @dataclass
    class Later(Config):
        new_knob: int = 3                      # a field added later, listed nowhere: fingerprinted
    fp = settings_fingerprint(Later(), DistEnv(), "fp32")
    assert fp["new_knob"] == 3 and not set(RESUME_SAFE) & set(fp) - {"precision"}


def test_a_resumed_runs_summary_covers_the_whole_run(run_dir, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(run_dir, out)
    first = json.loads((out / "summary.json").read_text())
    s = T.train(load_config("quick", **BASE, output=str(out), resume=True), progress=False)   # nothing left to do
    assert s["global_step"] == first["global_step"] == 4
    # before: 0.0 samples/s over 0 s (only the resumed part), and the model card took it
    assert s["train_samples_per_s"] == pytest.approx(first["train_samples_per_s"], rel=1e-6)
    assert s["train_s"] == pytest.approx(first["train_s"]) and s["wall_s"] >= first["train_s"]
    card = (out / "best" / "README.md").read_text()          # rewritten at the end of the resumed run
    assert "| wall time | 0.0 s |" not in card and f"| wall time | {s['wall_s']:.1f} s |" in card, card
