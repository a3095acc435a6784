"""Publishing: the model card written from a run summary, `distrinews push` (refusals and the exact upload
requests, with only the network calls replaced), the Docker Space files, and LICENSE in the distributions.
No network, no Docker: a live upload and an image build are not exercised here (see nbs/publish.qmd)."""
from __future__ import annotations
import fnmatch, json, re, shlex, subprocess, sys, time, zipfile
from pathlib import Path

import pytest
import yaml

from distrinews.cli import build_parser, main
from helpers import ROOT, free_port, run_cli, settings

SUMMARY = dict(world_size=2, device="cpu", precision="bf16", wall_s=61.25, global_step=120, epochs_done=2, global_batch=64,
               hardware=dict(kind="cpu", count=0, name="AMD EPYC 9B14", cpu_cores=2),
               eval=dict(accuracy=0.8875, precision=0.8901, recall=0.8873, macro_f1=0.8869, loss=0.35, n=400),
               confusion=[[90, 4, 4, 2], [1, 98, 1, 0], [5, 1, 84, 10], [3, 0, 14, 83]],
               config=dict(model="distilbert-base-uncased", data="ag_news", eval_data="ag_news", val_fraction=0.05,
                           max_train_samples=4000, epochs=2, batch_size=32, lr=5e-5, precision="auto"))


# ---------------------------------------------------------------- the model card

def test_card_parses_back_with_the_summary_numbers(tmp_path):
    from huggingface_hub import ModelCard
    from distrinews.model import write_model_card
    path = write_model_card(tmp_path, SUMMARY)
    assert path == tmp_path / "README.md"
    card = ModelCard.load(path)
    d = card.data
    assert (d.library_name, d.pipeline_tag, d.license, d.base_model) == \
        ("transformers", "text-classification", "apache-2.0", "distilbert-base-uncased")
    assert d.datasets == ["fancyzhx/ag_news"] and d.language == "en"
    got = {r.metric_type: r.metric_value for r in d.eval_results}
    ev = SUMMARY["eval"]
    assert got == {"accuracy": ev["accuracy"], "f1": ev["macro_f1"], "precision": ev["precision"], "recall": ev["recall"]}
    assert {(r.dataset_type, r.dataset_split, r.task_type) for r in d.eval_results} == {("fancyzhx/ag_news", "test", "text-classification")}
    text = card.text
    for must in ("World", "Sports", "Business", "Sci/Tech", "distilbert-base-uncased", "4000 rows of", "5e-05", "bf16",
                 "2 process(es) on CPU AMD EPYC 9B14 (2 cores)", "61.2 s", "| Accuracy | 0.8875 |", "| Macro F1 | 0.8869 |",
                 "| **Sci/Tech** | 3 | 0 | 14 | 83 |", 'pipeline("text-classification"', "distrinews serve", "non-commercial"):
        assert must in text, must


def test_card_of_a_tiny_offline_run(tmp_path):
    "A run of the tiny model on synthetic data: no Hub base model, no dataset id; the held-out split is named."
    from huggingface_hub import ModelCard
    from distrinews.model import write_model_card
    s = {**SUMMARY, "config": {**SUMMARY["config"], "model": "tiny", "data": "synthetic:2000", "eval_data": None}}
    card = ModelCard.load(write_model_card(tmp_path, s))
    assert card.data.base_model is None and card.data.datasets is None
    assert card.data.eval_results[0].dataset_type == "synthetic"
    assert "held-out 0.05" in card.data.eval_results[0].dataset_split


def test_card_of_a_real_checkpoint_loads_in_pipeline(tmp_path):
    "A saved tiny checkpoint with its card is still a checkpoint that `transformers.pipeline` loads."
    import torch
    from transformers import pipeline
    from distrinews.model import load_model, save_model, write_model_card
    torch.manual_seed(0)
    model, tok = load_model("tiny")
    save_model(model, tok, tmp_path)
    write_model_card(tmp_path, SUMMARY)
    assert pipeline("text-classification", model=str(tmp_path))("Mars rover lands")[0]["label"] in \
        ("World", "Sports", "Business", "Sci/Tech")


# ---------------------------------------------------------------- distrinews push

def _checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json", "README.md"):
        (folder / f).write_text("{}")
    return folder


def _push(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["push", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err.strip()


@pytest.mark.parametrize("remove,missing", [("model.safetensors", "model.safetensors"), ("config.json", "config.json"),
                                            ("tokenizer.json", "tokenizer.json or vocab.txt"),
                                            ("tokenizer_config.json", "tokenizer_config.json")])
def test_push_refuses_an_incomplete_checkpoint(tmp_path, capsys, monkeypatch, remove, missing):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    ck = _checkpoint(tmp_path / "best")
    (ck / remove).unlink()
    rc, _, err = _push(capsys, "--checkpoint", str(ck), "--repo-id", "alice/news")
    assert rc == 2
    assert err == f"distrinews push: error: checkpoint: {ck} is not a complete checkpoint: missing {missing}"


def test_push_refusals(tmp_path, capsys, monkeypatch):
    ck = _checkpoint(tmp_path / "best")
    rc, _, err = _push(capsys, "--checkpoint", str(tmp_path / "nope"), "--repo-id", "alice/news")
    assert (rc, err) == (2, f"distrinews push: error: checkpoint: {tmp_path / 'nope'}: no such folder "
                            "(the trainer writes OUT/best/ and OUT/last/)")
    rc, _, err = _push(capsys, "--checkpoint", str(ck), "--repo-id", "alice/x/y")
    assert rc == 2 and "--repo-id: 'alice/x/y' is not of the form USER/NAME" in err
    # no token anywhere
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    rc, _, err = _push(capsys, "--checkpoint", str(ck), "--repo-id", "alice/news")
    assert (rc, err) == (2, "distrinews push: error: push: no Hugging Face token: set HF_TOKEN or run `hf auth login` (write access)")


def test_push_offline_fails_fast_in_one_line(tmp_path):
    "In a fresh process with a token but no reachable Hub, push ends within seconds with one line and exit code 2."
    ck = _checkpoint(tmp_path / "best")
    endpoint = f"https://127.0.0.1:{free_port()}"   # a port nothing listens on: the connection is refused, as a blocked network refuses it
    env = {"HF_TOKEN": "hf_test", "HF_ENDPOINT": endpoint, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    t = time.monotonic()
    r = run_cli("push", "--checkpoint", ck, "--repo-id", "alice/news", check=False, env=env, timeout=120)
    took = time.monotonic() - t
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"distrinews push: error: push: the Hugging Face Hub ({endpoint}) is unreachable from this machine"
    assert took < 60, f"push took {took:.0f}s to fail offline"
    r = run_cli("push", "--checkpoint", ck, "--repo-id", "alice/news", check=False, env={**env, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert (r.returncode, r.stderr.strip()) == (2, "distrinews push: error: push: HF_HUB_OFFLINE=1 is set; unset it to upload")


def _fake_hub(monkeypatch, capsys=None):
    "Replace only the network: the reachability probe, HfApi.create_repo and HfApi.create_commit (recorded, with what was printed before)."
    import huggingface_hub
    calls = []
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr("distrinews.cli.check_hub", lambda timeout=3.0: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: calls.append(("create_repo", self.token, a, k)))
    def commit(self, **k):
        printed = capsys.readouterr().out if capsys else ""
        files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in k["operations"]}
        calls.append(("create_commit", self.token, files, k, printed))
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{k['repo_id']}/commit/abc", commit_message="m",
                                          commit_description="", oid="abc")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", commit)
    return calls


def test_push_makes_the_right_requests(tmp_path, capsys, monkeypatch):
    "Only the network is replaced: create_repo and create_commit of HfApi, and the reachability probe."
    import huggingface_hub
    calls = _fake_hub(monkeypatch, capsys)
    ck = _checkpoint(tmp_path / "best")
    (ck / ".hidden").write_text("x"); (ck / "notes.txt").write_text("private notes")
    rc, out, err = _push(capsys, "--checkpoint", str(ck), "--repo-id", "alice/news", "--private")
    assert rc == 0, err
    assert calls[0] == ("create_repo", "hf_test", ("alice/news",), dict(repo_type="model", private=True, exist_ok=True))
    name, token, files, k, printed = calls[1]
    assert (name, token, k["repo_id"], k["repo_type"]) == ("create_commit", "hf_test", "alice/news", "model")
    assert sorted(files) == ["README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert len(calls) == 2
    assert printed.startswith(f"uploading 5 files of {ck} to alice/news: README.md (2 B), config.json (2 B)")   # listed before
    assert "not uploaded (training state and other files stay here): .hidden, notes.txt" in printed
    assert "pushed" in out and "https://huggingface.co/alice/news" in out
    # an HTTP error of the Hub (e.g. 401) is one line too
    def fail(self, **k): raise OSError("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create\nmore")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", fail)
    rc, _, err = _push(capsys, "--checkpoint", str(ck), "--repo-id", "alice/news")
    assert (rc, err) == (2, "distrinews push: error: push: upload to alice/news failed: 401 Client Error: Unauthorized "
                            "for url: https://huggingface.co/api/repos/create")


def test_no_local_path_in_cards_or_pushed_files(tmp_path, capsys, monkeypatch):
    "A run whose base model and training data are absolute local paths: its cards and everything push uploads name files only."
    import csv
    from huggingface_hub import ModelCard
    from distrinews.config import load_config
    from distrinews.train import tiny_checkpoint, train
    private = tmp_path / "home" / "alice" / "private"
    base = tiny_checkpoint(private / "base-model")
    rows = [(f"{t} {i}", y) for i in range(40) for t, y in (("Stocks rally on Wall Street", 2), ("The Yankees win", 1),
                                                            ("NASA launches a probe", 3), ("Peace talks in the capital", 0))]
    with open(private / "leads.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["text", "label"]); w.writerows(rows)
    out = tmp_path / "run"
    train(load_config("quick", model=str(base), data=str(private / "leads.csv"), epochs=1, nproc=1, output=str(out), log_every=1000),
          progress=False)
    secret = str(tmp_path).encode()          # every absolute path of this run starts with it
    for ck in ("best", "last"):
        card = (out / ck / "README.md").read_bytes()
        assert secret not in card, ck
        text = card.decode()
        assert "`leads.csv`" in text and "`base-model`" in text, text
        assert ModelCard.load(out / ck / "README.md").data.base_model is None        # not a Hub id: no base_model link
    assert secret in (out / "last" / "trainer_state.json").read_bytes()                # (the training state does hold them)
    calls = _fake_hub(monkeypatch, capsys)
    rc, _, err = _push(capsys, "--checkpoint", str(out / "best"), "--repo-id", "alice/news")
    assert rc == 0, err
    rc, _, err = _push(capsys, "--checkpoint", str(out / "last"), "--repo-id", "alice/news")       # refused: training state
    assert rc == 2 and "is a last/ checkpoint (training state: optimizer.pt, state.pt, trainer_state.json)" in err, err
    rc, _, err = _push(capsys, "--checkpoint", str(out / "last"), "--repo-id", "alice/news", "--last")
    assert rc == 0, err
    pushed = [c for c in calls if c[0] == "create_commit"]
    assert len(pushed) == 2
    for _, _, files, _, printed in pushed:
        assert set(files) == {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
        for name, data in files.items(): assert secret not in data, name
        assert "uploading 5 files" in printed


# ---------------------------------------------------------------- the Space

def _dockerfile() -> list[tuple[str, str]]:
    "(instruction, arguments) of each instruction of the Dockerfile, continuation lines joined."
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ins, _, rest = line.partition(" ")
            out.append((ins.upper(), rest.strip()))
    return out


def _copy_sources() -> list[str]:
    srcs = []
    for ins, rest in _dockerfile():
        if ins == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            srcs += parts[:-1]
    return srcs


def test_dockerfile_copy_sources_exist_and_are_uploaded():
    srcs = _copy_sources()
    assert srcs, "the Dockerfile copies nothing"
    for s in srcs: assert (ROOT / s).exists(), f"Dockerfile: COPY source {s} does not exist in the repository"
    page = (ROOT / "nbs" / "publish.qmd").read_text()
    allow = re.search(r"allow_patterns=\[(.*?)\]", page, re.S)
    assert allow, "nbs/publish.qmd: no allow_patterns list for the Space upload"
    patterns = re.findall(r'"([^"]+)"', allow.group(1))
    for s in srcs:
        if s == "README.md": continue   # the Space's README.md is space/README.md, uploaded on its own
        probe = s + "/__init__.py" if (ROOT / s).is_dir() else s
        assert any(fnmatch.fnmatch(probe, p) for p in patterns), f"{s} is copied by the Dockerfile but not uploaded to the Space"
    assert "Dockerfile" in patterns


def test_dockerfile_installs_the_package_like_pip_install_dot():
    "The image installs `.` (so exactly settings.ini's requirements, the package set of `pip install .`), no extras."
    runs = [rest for ins, rest in _dockerfile() if ins == "RUN" and "pip install" in rest]
    pkg = [r for r in runs if re.search(r"pip install\s+\.(\s|$)", r)]
    assert len(pkg) == 1, f"expected one `pip install .` in the Dockerfile, found {runs}"
    assert "[" not in pkg[0], "the image must install the base package, as `pip install .` does"
    others = [r for r in runs if r not in pkg]
    for r in others:   # any other install is torch itself (its CPU build), which `pip install .` would also install
        names = [a for a in shlex.split(r.split("pip install", 1)[1]) if not a.startswith("-") and "://" not in a]
        assert all(re.split(r"[=<>]", n)[0] == "torch" for n in names), f"the Dockerfile installs more than the package: {r}"
    assert "torch" in [re.split(r"[=<>!~;\[ ]", r)[0] for r in shlex.split(settings()["requirements"])]   # torch>=2.6 counts


def test_dockerfile_cmd_is_a_valid_serve():
    cmd = [rest for ins, rest in _dockerfile() if ins == "CMD"]
    assert len(cmd) == 1
    argv = json.loads(cmd[0])
    assert argv[:2] == ["distrinews", "serve"]
    ns = build_parser().parse_args(argv[1:])   # the real parser: unknown flags or bad values exit here
    assert (ns.command, ns.host, ns.port) == ("serve", "0.0.0.0", 7860)
    assert ns.checkpoint.startswith("/home/user/app/")
    assert any(a == "EXPOSE" and r == "7860" for a, r in _dockerfile())


def test_space_readme_front_matter():
    text = (ROOT / "space" / "README.md").read_text()
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "space/README.md needs YAML front matter"
    fm = yaml.safe_load(m.group(1))
    assert fm["sdk"] == "docker" and fm["app_port"] == 7860
    assert fm.get("title")


# ---------------------------------------------------------------- licence in the distributions

def test_license_file_and_manifest():
    lic = (ROOT / "LICENSE").read_text()
    assert "Apache License" in lic and "Version 2.0, January 2004" in lic
    assert "include LICENSE" in (ROOT / "MANIFEST.in").read_text()


def test_wheel_carries_the_license(tmp_path):
    "Build the wheel (no network: the build backend is the installed setuptools) and look inside."
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    whl = next(tmp_path.glob("distrinews-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names


def test_a_training_run_writes_cards_whose_numbers_match_its_summary(tmp_path):
    "The trainer writes README.md (the model card) into best/ and last/, with the numbers of its summary.json."
    from huggingface_hub import ModelCard
    from distrinews.config import load_config
    from distrinews.train import train
    out = tmp_path/"run"
    train(load_config("quick", data="synthetic:200", epochs=1, nproc=1, output=str(out), log_every=1000), progress=False)
    s = json.loads((out/"summary.json").read_text())
    for ck in ("best", "last"):
        d = ModelCard.load(out/ck/"README.md").data
        got = {r.metric_type: r.metric_value for r in d.eval_results}
        assert got == {"accuracy": s["eval"]["accuracy"], "f1": s["eval"]["macro_f1"],
                       "precision": s["eval"]["precision"], "recall": s["eval"]["recall"]}, ck
        assert d.pipeline_tag == "text-classification" and d.library_name == "transformers"
