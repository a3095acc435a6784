"""The real server against slow clients and odd flags (issue 30, items 3 and 9): sockets that never finish their
headers are closed, so a real request gets 200 while they stay open on the client side; bad flags and a busy port
end in one line before the model loads. Loopback only, a bounded number of sockets, every step under a timeout."""
import errno, socket, time

import httpx
import pytest

from helpers import cli_error, free_port, serve_process, site_env, start_serve, wait_for_health

IDLE = 120            # sockets that never finish their headers: more than --max-connections below
MAX_CONNECTIONS = 50


def test_sockets_that_never_send_their_headers_are_closed_and_real_requests_get_200(ckpt, tmp_path):
    proc, port, url = start_serve(ckpt, tmp_path, "--max-connections", str(MAX_CONNECTIONS))
    idle = []
    try:
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")      # ... and never the blank line that ends the headers
            idle.append(s)
        time.sleep(0.5)
        assert httpx.get(url + "/health", timeout=5).status_code == 503   # the attack works at first: every slot is taken
        codes, t0 = [], time.time()
        while time.time() - t0 < 15:                 # before: 503 for as long as the sockets stay open (> 120 s)
            codes.append(httpx.get(url + "/health", timeout=5).status_code)
            if codes[-1] == 200: break
            time.sleep(0.5)
        assert codes[-1] == 200, f"still {codes[-1]} after {time.time() - t0:.0f} s with {IDLE} idle sockets open"
        r = httpx.post(url + "/predict", json={"text": "Oil prices tumbled after weak sales on Wall Street."}, timeout=10)
        assert r.status_code == 200 and r.json()["label"] == "Business"
        closed = 0
        for s in idle:                               # the server closed them: a read sees the end of the stream
            s.settimeout(5)
            try: closed += s.recv(1) == b""
            except OSError: closed += 1
        assert closed == IDLE
    finally:
        for s in idle: s.close()
        proc.terminate(); proc.wait(20)


@pytest.mark.parametrize("flags, says", [(["--threads", "-1"], "--threads: must be >= 1"), (["--threads", "0"], "--threads: must be >= 1"),
                                         (["--log-level", "bogus"], "--log-level: must be one of"),
                                         (["--max-connections", "0"], "--max-connections: must be >= 1")])
def test_bad_serve_flags_are_one_line_before_the_model_loads(tmp_path, flags, says):
    rc, err = cli_error(["serve", "--checkpoint", str(tmp_path / "not-even-there"), "--port", str(free_port()), *flags])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("distrinews serve: error: "), err
    assert says in err and "no such checkpoint" not in err, err   # the flags first


def test_doctor_nproc_zero_is_refused():
    rc, err = cli_error(["doctor", "--nproc", "0"])
    assert rc == 2 and "--nproc: must be >= 1, got 0" in err


# A slow disk under the checkpoint, in the serve process only (sitecustomize, first on its PYTHONPATH): reading the
# weights' header waits until the file $DISTRINEWS_SLOW_LOAD exists, and says it started by creating `loading` beside it.
SLOW_DISK = '''
import os
if os.environ.get("DISTRINEWS_SLOW_LOAD"):
    import pathlib, time, safetensors
    _open = safetensors.safe_open
    def safe_open(*args, **kw):
        go = pathlib.Path(os.environ["DISTRINEWS_SLOW_LOAD"])
        (go.parent / "loading").touch()
        while not go.exists(): time.sleep(0.05)
        return _open(*args, **kw)
    safetensors.safe_open = safe_open
'''


def test_the_port_is_held_while_the_model_loads(ckpt, tmp_path):
    "The port is bound before the model loads: while the load lasts no other program can take it, and it is served after."
    port, go, log = free_port(), tmp_path / "go", tmp_path / "serve.log"
    proc = serve_process(ckpt, port, log, env=site_env(tmp_path, SLOW_DISK, DISTRINEWS_SLOW_LOAD=str(go)))
    try:
        t0 = time.time()
        while not (tmp_path / "loading").exists():          # serve is inside the model load, waiting for `go`
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.time() - t0 < 120, "distrinews serve never reached the model load"
            time.sleep(0.05)
        with socket.socket() as other:                        # another program wants the port now
            try: other.bind(("127.0.0.1", port))
            except OSError as e: assert e.errno == errno.EADDRINUSE, e
            else:                                             # before: free during the load; serve finds it taken after
                go.touch()
                rc = proc.wait(120)
                raise AssertionError(f"port {port} was free while the model loaded and another program took it; serve "
                                     f"exited {rc} only after the load:\n{log.read_text()[-1500:]}")
        go.touch()
        url = wait_for_health(proc, port, log)                # the load ends: the port it held is served
        r = httpx.post(url + "/predict", json={"text": "Oil prices tumbled after weak sales on Wall Street."}, timeout=10)
        assert r.status_code == 200 and r.json()["label"] == "Business"
    finally:
        go.touch()
        proc.terminate(); proc.wait(20)
