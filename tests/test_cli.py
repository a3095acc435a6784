"""The command line: flags owned by distrinews.cli (instant --help, same flags as the chapters' runners expect),
httpx in the base requirements, one-line errors."""
from __future__ import annotations
import argparse, importlib, inspect, re, shlex, subprocess, sys
from dataclasses import fields

import pytest

from distrinews.cli import COMMANDS, DTYPES, FLAGS, SERVE_DEFAULTS, build_parser, main
from helpers import ROOT, settings


def _run(code: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_help_imports_no_torch(cmd):
    "`distrinews <cmd> --help` prints the flags without importing torch or transformers (so it is instant)."
    code = ("import sys, contextlib, io\nfrom distrinews.cli import main\nout = io.StringIO()\n"
            f"with contextlib.redirect_stdout(out):\n    try: main([{cmd!r}, '--help'])\n    except SystemExit as e: assert e.code == 0\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'fastapi', 'huggingface_hub') if m in sys.modules)\n"
            "print('HEAVY', heavy)\nprint('USAGE' if 'usage: distrinews' in out.getvalue() else 'NO-USAGE')")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, f"`distrinews {cmd} --help` imported {r.stdout}"
    assert "USAGE" in r.stdout.split()


def _actions(p: argparse.ArgumentParser) -> dict:
    "Every flag of `p` as comparable facts (help texts excluded: wording may differ)."
    return {a.dest: (tuple(a.option_strings), a.default, a.type, tuple(a.choices) if a.choices else None, a.required,
                     a.nargs, type(a).__name__) for a in p._actions if a.dest != "help"}


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_flags_are_declared_once_in_the_cli(cmd):
    """The flags of `cmd` are declared only by distrinews.cli (no second copy in the chapter's module that could
    drift from it), and they build a parser."""
    mod = importlib.import_module(COMMANDS[cmd][0])
    if mod.__name__ != "distrinews.cli":
        assert not hasattr(mod, f"add_{cmd}_args"), f"{mod.__name__}.add_{cmd}_args duplicates distrinews.cli's flags"
    p = argparse.ArgumentParser()
    FLAGS[cmd](p)
    # every name the command's runner reads as `args.NAME` is a flag of its parser (a renamed or dropped flag fails here)
    run = getattr(importlib.import_module(COMMANDS[cmd][0]), f"run_{cmd}")
    read = set(re.findall(r"\bargs\.(\w+)", inspect.getsource(run)))
    if cmd == "train":   # run_train reads the Config fields through config_from_args: one flag per field
        from distrinews.config import Config
        read |= {f.name for f in fields(Config)} - {"preset"}   # `preset` comes from --config
    assert read, f"run_{cmd} reads no flag"
    missing = read - set(_actions(p))
    assert not missing, f"run_{cmd} reads {sorted(missing)}, which `distrinews {cmd}` does not define"


def test_runners_exist_and_read_the_parsed_names():
    "Each command has a `run_<cmd>`; the serving defaults repeated in the CLI equal the API's constants."
    for cmd, (mod, _) in COMMANDS.items():
        assert callable(getattr(importlib.import_module(mod), f"run_{cmd}", None)), f"{mod} has no run_{cmd}"
    from distrinews import api, loader
    assert DTYPES == loader.DTYPES
    assert SERVE_DEFAULTS == dict(queue_size=api.QUEUE_SIZE, queue_texts=api.QUEUE_TEXTS, max_texts=api.MAX_TEXTS,
                                  max_chars=api.MAX_CHARS, body_timeout=api.BODY_TIMEOUT_S, max_connections=api.MAX_CONNECTIONS,
                                  header_timeout=api.HEADER_TIMEOUT_S)


def test_parser_round_trips_train_flags():
    from distrinews.config import config_from_args
    ns = build_parser().parse_args(["train", "--config", "quick", "--lr", "0.001", "--nproc", "1"])
    cfg = config_from_args(ns)
    assert (ns.command, cfg.lr, cfg.nproc) == ("train", 0.001, 1)


def test_bad_flag_value_is_one_line(capsys):
    assert main(["train", "--config", "quick", "--lr", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "distrinews train: error: lr: must be > 0, got -1.0"


def _requirements() -> list[str]:
    return shlex.split(settings()["requirements"])


def test_every_subcommand_runs_from_the_base_install():
    """`pip install distrinews` alone must run every subcommand: what the modules import (httpx for the serving
    benchmark, huggingface_hub for push) is in the base requirements, not only in the dev extras."""
    import re
    base = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in _requirements()}
    for pkg in ("httpx", "huggingface_hub", "torch", "transformers", "fastapi", "uvicorn", "matplotlib"):
        assert pkg in base, f"{pkg} is imported by a subcommand but not in settings.ini requirements"
    src = "\n".join((ROOT / "distrinews" / f).read_text() for f in ("bench.py", "servebench.py", "api.py", "cli.py", "model.py"))
    for mod in sorted(set(re.findall(r"^\s*(?:import|from) (httpx|requests|aiohttp)\b", src, re.M))):
        assert mod in base, f"a module imports {mod}, which is not in the base requirements"


def test_tiny_tokenizer_from_a_vocab_file():
    "The offline tokenizer is a vocab.txt loaded with from_pretrained (transformers 4.x and 5.x); it is deterministic."
    from distrinews.data import tiny_tokenizer, tiny_vocab
    tok = tiny_tokenizer()
    assert tok.convert_ids_to_tokens(list(range(len(tiny_vocab())))) == tiny_vocab()
    assert tok.tokenize("NASA Zxq") == ["nasa", "z", "##x", "##q"]
