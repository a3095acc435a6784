"""Plain helpers that several test files share (pytest puts tests/ on sys.path, so `from helpers import ...`).
Fixtures live in conftest.py; functions the spawned ranks import live in _train_helpers.py."""
from __future__ import annotations
import configparser, contextlib, importlib.util, io, os, socket, subprocess, sys, time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "distrinews.cli"]          # the real command line in a fresh process


def run_cli(*args, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    "`distrinews ARGS` in a fresh process (text output captured; a hang fails the test); with `check`, exit 0 or an AssertionError with its output."
    r = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0: raise AssertionError(f"exit {r.returncode}\nSTDOUT:\n{r.stdout[-3000:]}\nSTDERR:\n{r.stderr[-5000:]}")
    return r


def settings() -> configparser.SectionProxy:
    "settings.ini's [DEFAULT] section, as nbdev reads it."
    cp = configparser.ConfigParser(delimiters=["="])
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    return cp["DEFAULT"]


def load_script(relpath: str, name: str) -> ModuleType:
    "The script at ROOT/`relpath` (not a package module: benchmarks/report.py, tools/*.py) imported as module `name`."
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    "A loopback port nothing listens on (free when asked; the caller binds it soon after)."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_error(argv: list[str]) -> tuple[int, str]:
    "`distrinews.cli.main(argv)` in this process: its exit code and what it wrote to stderr."
    from distrinews.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err): rc = main(argv)
    return rc, err.getvalue()


def site_env(tmp_path: Path, code: str, name: str = "site", **env: str) -> dict:
    """`os.environ` plus `env`, with a folder holding `code` as sitecustomize.py first on PYTHONPATH: every Python
    process started with it (the CLI, its ranks) runs `code` first (an injection without a test hook in the package)."""
    site = tmp_path / name
    site.mkdir()
    (site / "sitecustomize.py").write_text(code)
    return {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def serve_process(ckpt, port: int, log: Path, *flags: str, env: dict | None = None) -> subprocess.Popen:
    "`distrinews serve` of `ckpt` on loopback `port` in a subprocess, its stdout and stderr in the file `log`."
    with open(log, "w+") as f:                          # the server keeps its own copy of the file descriptor
        return subprocess.Popen([*CLI, "serve", "--checkpoint", str(ckpt), "--port", str(port), "--log-level", "warning", *flags],
                                stdout=f, stderr=subprocess.STDOUT, env={**(env or os.environ), "TOKENIZERS_PARALLELISM": "false"})


def wait_for_health(proc: subprocess.Popen, port: int, log: Path, limit_s: float = 90) -> str:
    "The URL of the `distrinews serve` process `proc` on loopback `port` once its /health answers 200 (its output in `log`)."
    import httpx
    url, t0 = f"http://127.0.0.1:{port}", time.time()
    while True:
        if proc.poll() is not None: raise AssertionError(Path(log).read_text())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200: return url
        except httpx.TransportError: pass
        if time.time() - t0 >= limit_s:
            proc.kill()
            raise AssertionError("distrinews serve did not come up")
        time.sleep(0.2)


def start_serve(ckpt, tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, int, str]:
    """Start `distrinews serve` on a free port (its output in tmp_path/serve.log); return it, its port and its URL once
    /health answers 200."""
    port = free_port()
    proc = serve_process(ckpt, port, tmp_path / "serve.log", *flags)
    return proc, port, wait_for_health(proc, port, tmp_path / "serve.log")
