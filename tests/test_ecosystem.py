"""Where the ecosystem has the function, distrinews uses it (issue 31, item 6): type hints resolved by
`typing.get_type_hints` (no `eval`), seeds set by `transformers.set_seed` (numpy included), and int8 bound to the
torch versions that still ship `torch.ao.quantization`, with one clear line where it is gone."""
from __future__ import annotations
import random, sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distrinews.config import Config, ConfigError


@dataclass
class _MoreConfig(Config):
    "A user's subclass with a field whose annotation names a class of this module (Path), not of `typing`."
    extra_dir: Path | None = None


def test_config_annotations_resolve_like_python_does():
    c = _MoreConfig(extra_dir="runs/x")          # old code: eval("Path | None", typing's names) -> NameError
    assert c.extra_dir == Path("runs/x")
    assert _MoreConfig(extra_dir="none").extra_dir is None
    with pytest.raises(ConfigError, match="epochs"): _MoreConfig(epochs="two")


def test_config_source_has_no_eval():
    import inspect, distrinews.config as config
    assert "eval(" not in inspect.getsource(config), "config: resolve annotations with typing.get_type_hints, not eval"


def test_seed_everything_seeds_numpy_too():
    from distrinews.ddp import seed_everything
    draws = []
    for _ in range(2):
        seed_everything(123)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1], "seed_everything must seed Python, numpy and torch"


def test_int8_without_torch_ao_says_what_to_do(monkeypatch):
    "A torch without `torch.ao.quantization` (announced for removal) gets one line naming the cause and the way out."
    from distrinews.loader import quantize_int8
    from distrinews.model import ModelError
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)    # what `import` sees once torch drops it
    with pytest.raises(ModelError, match=r"int8: .*torch\.ao\.quantization.*torch [<=]"):
        quantize_int8(nn.Sequential(nn.Linear(4, 2)))


def test_int8_still_quantizes_where_torch_ao_exists():
    from distrinews.loader import quantize_int8
    m = quantize_int8(nn.Sequential(nn.Linear(8, 4)).eval())
    assert "Quantized" in type(m[0]).__name__ or "quantized" in type(m[0]).__module__
