"""Config: coercion of flag values, the overwrite flag."""
import argparse
import pytest

from distrinews.config import ConfigError, add_config_args, config_from_args, load_config


def parse(*argv):
    return config_from_args(add_config_args(argparse.ArgumentParser()).parse_args(list(argv)))


@pytest.mark.parametrize("value", ["1.5", "2.0001", "0.5"])
def test_fractional_epochs_are_rejected_not_truncated(value):
    with pytest.raises(ConfigError, match=f"epochs: expected an integer, got '{value}'"): parse("--epochs", value)


def test_integer_flags_still_accept_integers():
    assert parse("--epochs", "3").epochs == 3
    assert parse("--epochs", "2.0").epochs == 2
    with pytest.raises(ConfigError, match="batch_size: expected int, got 'lots'"): parse("--batch-size", "lots")


def test_overwrite_is_a_flag_and_off_by_default():
    assert parse().overwrite is False
    assert parse("--overwrite").overwrite is True
    assert load_config("quick", overwrite=True).overwrite is True


@pytest.mark.parametrize("gpus,preset,nproc", [(0, "quick", 2), (1, "colab-1gpu", 1), (2, "kaggle-2xt4", 2), (4, "kaggle-2xt4", 4)])
def test_auto_preset_follows_the_gpu_count_without_touching_cuda(monkeypatch, capsys, gpus, preset, nproc):
    import torch
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    # Every torch.cuda call that would create a CUDA context goes through _lazy_init: record them. (On this CPU-only
    # torch `is_initialized()` is always False, so asking it afterwards could never fail.)
    inits = []
    monkeypatch.setattr(torch.cuda, "_lazy_init", lambda: inits.append(1))
    cfg = load_config("auto", epochs=1)
    assert (cfg.preset, cfg.nproc, cfg.epochs) == (preset, nproc, 1)
    assert f"preset auto: {preset}" in capsys.readouterr().out
    assert parse("--config", "auto").preset == preset
    assert inits == [], "the auto preset created a CUDA context: a notebook could no longer fork its launch"


def test_preset_is_recorded_and_yaml_round_trips(tmp_path):
    from distrinews.config import save_config
    assert load_config("quick").preset == "quick" and load_config().preset is None
    assert load_config(save_config(load_config(), tmp_path/"plain.yaml")).preset is None
    assert load_config(save_config(load_config("quick", epochs=1), tmp_path/"q.yaml")).epochs == 1
    assert "--preset" not in add_config_args(argparse.ArgumentParser()).format_help()
