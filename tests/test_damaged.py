"""Checkpoints damaged the way an unlucky user (or an attacker) damages them: each is refused in one line with exit 2
by `predict`, `eval` and `serve`, never served or scored with random weights, never a traceback (issue 30, items 1, 2, 4)."""
import json, shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from distrinews.cli import main
from helpers import free_port


def _copy(ckpt, tmp_path, name="bad"):
    d = tmp_path / name
    shutil.copytree(ckpt, d)
    return d


def _config(d, **change):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(change)
    (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))


def _weights(d, fn):
    w = load_file(str(d / "model.safetensors"))
    save_file(fn(w), str(d / "model.safetensors"), metadata={"format": "pt"})


def no_head(d): _weights(d, lambda w: {k: v for k, v in w.items() if "classifier" not in k})
def extra_tensor(d): _weights(d, lambda w: {**w, "surprise.weight": torch.zeros(2)})
def other_arch(d): _config(d, model_type="gpt2", architectures=["GPT2ForSequenceClassification"])
def truncated(d): (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000])
def empty(d): (d / "model.safetensors").write_bytes(b"")
def garbage(d): (d / "model.safetensors").write_bytes(b"\x00garbage" * 1000)
def label_gap(d): _config(d, id2label={"0": "World", "1": "Sports", "3": "Sci/Tech"}, label2id=None, num_labels=None)
def huge_labels(d): _config(d, num_labels=100_000_000)
def negative_positions(d): _config(d, max_position_embeddings=-5)
def size_mismatch(d): _config(d, dim=32)
def no_tokenizer(d): (d / "tokenizer.json").unlink(); (d / "tokenizer_config.json").unlink()
def bad_json(d): (d / "config.json").write_text("{not json")
def pickle_only(d):
    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()


DAMAGES = {no_head: "missing (classifier.bias, classifier.weight, pre_classifier.bias", extra_tensor: "1 unexpected (surprise.weight)",
           other_arch: "do not match its config.json (gpt2)", truncated: "not a readable safetensors file",
           empty: "not a readable safetensors file", garbage: "not a readable safetensors file",
           label_gap: "without gaps", huge_labels: "num_labels must be an integer in 1..10,000",
           negative_positions: "max_position_embeddings must be an integer in 1..", size_mismatch: "mis-shaped",
           no_tokenizer: "no tokenizer vocabulary", bad_json: "not a readable JSON config",
           pickle_only: "only pickle weights (pytorch_model.bin)"}


def _one_line(capsys, prefix, says):
    err = capsys.readouterr().err.strip()
    lines = [l for l in err.splitlines() if l.startswith("distrinews ")]
    assert len(lines) == 1 and lines[0].startswith(prefix) and says in lines[0], err[-2000:]
    assert "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_damaged_checkpoint_refused_by_predict_eval_and_serve(ckpt, tmp_path, capsys, damage):
    d = _copy(ckpt, tmp_path)
    damage(d)
    says = DAMAGES[damage]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(d), "Oil prices tumbled"]) == 2
    _one_line(capsys, "distrinews predict: error: ", says)
    assert main(["eval", "--checkpoint", str(d), "--data", "synthetic:64"]) == 2
    _one_line(capsys, "distrinews eval: error: ", says)
    assert main(["serve", "--checkpoint", str(d), "--port", str(free_port())]) == 2     # never up, never /health ok
    _one_line(capsys, "distrinews serve: error: ", says)


def test_intact_checkpoint_still_loads(ckpt, capsys):
    assert main(["predict", "--checkpoint", str(ckpt), "--json", "Oil prices tumbled after weak sales on Wall Street."]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] == "Business"


def test_train_from_a_pickle_only_folder_is_refused_not_unpickled(ckpt, tmp_path, capsys):
    d = _copy(ckpt, tmp_path)
    pickle_only(d)
    rc = main(["train", "--config", "quick", "--model", str(d), "--data", "synthetic:64", "--nproc", "1",
               "--output", str(tmp_path / "o")])
    assert rc == 2                                         # before: transformers unpickled pytorch_model.bin and trained
    _one_line(capsys, "distrinews train: error: ", "only pickle weights (pytorch_model.bin)")
