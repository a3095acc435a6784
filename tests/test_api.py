"""The inference API (06_api) and loader (05_loader) through FastAPI's TestClient and an in-process uvicorn: the
schema, every class of bad input (each answered with a 4xx that names the problem, the service healthy afterwards),
back-pressure, abandoned and half-sent requests, a failing text inside a batch, precision choice, and the same answer
for a text alone and inside a batch. CPU only, loopback only: a tiny checkpoint is trained in the test."""
import asyncio, argparse, contextlib, json, logging, shutil, socket, threading, time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient

from distrinews import api
from distrinews.api import BODY_TIMEOUT_S, MAX_BODY, MAX_CHARS, MAX_TEXTS, QUEUE_TEXTS, create_app, run_serve
from distrinews.servebench import naive_app
from distrinews.cli import add_serve_args
from distrinews.config import LABELS
from distrinews.loader import ModelLoader
from distrinews.model import ModelError
from helpers import free_port

HEADLINES = ["NASA scientists discovered a distant planet in orbit.",
             "The Yankees rallied past the league leaders in overtime.",
             "Oil prices tumbled after weak sales on Wall Street.",
             "Peace negotiators signed a ceasefire in the capital.",
             "Mars", "Shares of the retailer jumped on strong earnings " * 6]


@pytest.fixture(scope="module")
def loader(ckpt):
    return ModelLoader(ckpt, dtype="fp32")      # fp32: a text's scores do not depend on its batch (1e-5 checks below)


@pytest.fixture(scope="module")
def client(loader):
    with TestClient(create_app(loader=loader)) as c:
        yield c


def assert_healthy(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    r = client.post("/predict", json={"text": HEADLINES[1]})
    assert r.status_code == 200 and r.json()["label"] == "Sports", r.text


# ---------------------------------------------------------------- schema

def test_health_and_info(client, ckpt):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model_loaded"] is True
    info = client.get("/info").json()
    assert info["labels"] == list(LABELS)
    assert info["model"] == "best" and str(ckpt.parent) not in json.dumps(info)    # the folder name, not the path
    assert info["model_type"] == "distilbert"
    assert info["max_length"] == 128 and info["quantized"] is False and info["dtype"] == "fp32"
    assert info["version"] == __import__("distrinews").__version__
    assert info["limits"] == {"max_texts": MAX_TEXTS, "max_chars": MAX_CHARS, "max_body_bytes": MAX_BODY, "queue_size": 256,
                              "queue_texts": QUEUE_TEXTS, "body_timeout_s": BODY_TIMEOUT_S}


def test_predict_schema(client):
    r = client.post("/predict", json={"text": HEADLINES[2]})
    assert r.status_code == 200
    p = r.json()
    assert set(p) == {"label", "confidence", "scores", "truncated"}
    assert set(p["scores"]) == set(LABELS) and p["label"] == "Business"
    assert p["confidence"] == max(p["scores"].values()) == p["scores"][p["label"]]
    assert abs(sum(p["scores"].values()) - 1) < 1e-5 and p["truncated"] is False


def test_batch_in_input_order_and_same_as_single(client):
    r = client.post("/predict/batch", json={"texts": HEADLINES})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert len(preds) == len(HEADLINES)
    assert [p["label"] for p in preds[:4]] == ["Sci/Tech", "Sports", "Business", "World"]
    for text, b in zip(HEADLINES, preds):
        one = client.post("/predict", json={"text": text}).json()
        assert one["label"] == b["label"]
        for k in LABELS: assert abs(one["scores"][k] - b["scores"][k]) < 1e-5


def test_long_text_is_truncated_and_reported(client):
    text = "Stocks rally on Wall Street. " * 100        # ~3000 characters: under MAX_CHARS, over 128 tokens
    r = client.post("/predict", json={"text": text})
    assert r.status_code == 200 and r.json()["truncated"] is True
    r = client.post("/predict/batch", json={"texts": [text, "Stocks rally"]})
    assert [p["truncated"] for p in r.json()["predictions"]] == [True, False]


def test_web_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="text"' in r.text and 'id="label"' in r.text and "fetch(\"predict\"" in r.text
    for external in ("src=", "href=", "://", "@import"): assert external not in r.text


def test_openapi_documents_the_bodies(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "texts" in body["properties"]


# ---------------------------------------------------------------- bad input: each a 4xx naming the problem

JSON = {"content-type": "application/json"}
DEEP = b"[" * 200_000 + b"]" * 200_000
DEEP_OBJ = b'{"a":' * 100_000 + b"1" + b"}" * 100_000

BAD_PREDICT = {
    "empty text": (dict(json={"text": ""}), 422, "text: empty or whitespace-only"),
    "whitespace text": (dict(json={"text": " \n\t "}), 422, "text: empty or whitespace-only"),
    "text is a number": (dict(json={"text": 42}), 422, "text: Input should be a valid string"),
    "text is null": (dict(json={"text": None}), 422, "text: Input should be a valid string"),
    "text is a list": (dict(json={"text": ["a"]}), 422, "text: Input should be a valid string"),
    "text is an object": (dict(json={"text": {"a": 1}}), 422, "text: Input should be a valid string"),
    "text is nested lists": (dict(json={"text": json.loads("[" * 500 + "]" * 500)}), 422, "text: Input should be a valid string"),
    "missing field": (dict(json={}), 422, "text: Field required"),
    "misspelled field": (dict(json={"txt": "Stocks rally"}), 422, "text: Field required"),
    "extra field": (dict(json={"text": "Stocks rally", "lang": "en"}), 422, "lang: Extra inputs are not permitted"),
    "body is a list": (dict(json=["Stocks rally"]), 422, "body: Input should be a valid dictionary"),
    "body is a string": (dict(json="Stocks rally"), 422, "body: Input should be a valid dictionary"),
    "malformed JSON": (dict(content=b'{"text": "a"', headers=JSON), 400, "malformed JSON"),
    "trailing garbage": (dict(content=b'{"text": "a"} x', headers=JSON), 400, "malformed JSON: Extra data"),
    "empty body": (dict(content=b"", headers=JSON), 400, "empty request body"),
    "invalid UTF-8": (dict(content=b'{"text": "\xff\xfe\xfa"}', headers=JSON), 400, "malformed JSON"),
    "deeply nested array": (dict(content=DEEP, headers=JSON), 400, "malformed JSON: nested too deeply"),
    "deeply nested object": (dict(content=DEEP_OBJ, headers=JSON), 400, "malformed JSON: nested too deeply"),
    "lone surrogate": (dict(content=b'{"text": "news \\ud800"}', headers=JSON), 422, "text: not valid Unicode"),
    "text/plain": (dict(content=b'{"text": "a"}', headers={"content-type": "text/plain"}), 415,
                   "content type must be application/json, got 'text/plain'"),
    "no content type": (dict(content=b'{"text": "a"}'), 415, "content type must be application/json, got 'none'"),
    "form data": (dict(data={"text": "a"}), 415, "got 'application/x-www-form-urlencoded'"),
    "text too long": (dict(json={"text": "a" * (MAX_CHARS + 1)}), 413,
                      f"text: {MAX_CHARS + 1} characters, over the limit of {MAX_CHARS}"),
    "body too big": (dict(content=b'{"text": "' + b"a" * (MAX_BODY + 10) + b'"}', headers=JSON), 413,
                     f"request body is over the limit of {MAX_BODY} bytes"),
}


@pytest.mark.parametrize("case", BAD_PREDICT)
def test_bad_predict_request(client, case):
    kw, status, message = BAD_PREDICT[case]
    r = client.post("/predict", **kw)
    assert r.status_code == status, (case, r.status_code, r.text)
    assert message in r.json()["detail"], (case, r.json())
    assert_healthy(client)


BAD_BATCH = {
    "texts is a string": ({"texts": "Stocks rally"}, 422, "texts: Input should be a valid list"),
    "texts missing": ({"text": "Stocks rally"}, 422, "texts: Field required"),
    "no texts": ({"texts": []}, 422, "texts: must hold at least one text"),
    "too many texts": ({"texts": ["Stocks rally"] * (MAX_TEXTS + 1)}, 413,
                       f"texts: {MAX_TEXTS + 1} texts, over the limit of {MAX_TEXTS} per request"),
    "one blank text": ({"texts": ["Stocks rally", "  "]}, 422, "texts[1]: empty or whitespace-only"),
    "one number": ({"texts": ["Stocks rally", "ok", 7]}, 422, "texts[2]: Input should be a valid string"),
    "one too long": ({"texts": ["a" * (MAX_CHARS + 1), "ok"]}, 413, f"texts[0]: {MAX_CHARS + 1} characters"),
}


@pytest.mark.parametrize("case", BAD_BATCH)
def test_bad_batch_request(client, case):
    body, status, message = BAD_BATCH[case]
    r = client.post("/predict/batch", json=body)
    assert r.status_code == status, (case, r.status_code, r.text)
    assert message in r.json()["detail"], (case, r.json())
    assert_healthy(client)


def test_wrong_method_and_path(client):
    assert client.get("/predict").status_code == 405
    assert client.post("/predict/many", json={"texts": ["a"]}).status_code == 404
    assert_healthy(client)


def test_limits_are_settings(loader):
    with TestClient(create_app(loader=loader, max_texts=20, max_chars=20, max_body=200)) as c:
        assert c.get("/info").json()["limits"]["max_texts"] == 20
        r = c.post("/predict/batch", json={"texts": ["a"] * 21})
        assert r.status_code == 413 and "over the limit of 20 per request" in r.json()["detail"]
        r = c.post("/predict", json={"text": "x" * 21})
        assert r.status_code == 413 and "21 characters, over the limit of 20" in r.json()["detail"]
        r = c.post("/predict/batch", json={"texts": ["x" * 19] * 12})     # each text and the count are fine, the body is not
        assert r.status_code == 413 and "over the limit of 200 bytes" in r.json()["detail"]
        assert c.post("/predict", json={"text": "Stocks rally"}).status_code == 200


# ---------------------------------------------------------------- load: back-pressure, failures, concurrency

class SlowLoader:
    "A ModelLoader stand-in whose batches take `delay` seconds; it records the batch sizes."
    def __init__(self, loader, delay=0.2):
        self.inner, self.delay, self.sizes = loader, delay, []

    def __getattr__(self, name): return getattr(self.inner, name)

    def predict_batch(self, texts, batch_size=None):
        time.sleep(self.delay)
        self.sizes.append(len(texts))
        return self.inner.predict_batch(texts, batch_size)


def test_full_queue_answers_503_with_retry_after(loader):
    with TestClient(create_app(loader=SlowLoader(loader), queue_size=2, max_batch=1)) as c:
        with ThreadPoolExecutor(12) as ex:
            rs = list(ex.map(lambda i: c.post("/predict", json={"text": f"Stocks rally {i}"}), range(12)))
        codes = [r.status_code for r in rs]
        assert set(codes) == {200, 503}, codes
        for r in rs:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1" and "server busy" in r.json()["detail"]
        assert c.get("/health").status_code == 200
        assert c.post("/predict", json={"text": "Stocks rally"}).status_code == 200


def test_concurrent_requests_are_batched(loader):
    slow = SlowLoader(loader, delay=0.05)
    with TestClient(create_app(loader=slow, max_batch=32, max_wait_ms=20)) as c:
        texts = [HEADLINES[i % 4] + f" {i}" for i in range(40)]
        with ThreadPoolExecutor(20) as ex:
            rs = list(ex.map(lambda t: c.post("/predict", json={"text": t}), texts))
        assert all(r.status_code == 200 for r in rs)
        assert len(slow.sizes) < 30 and max(slow.sizes) > 1, slow.sizes    # far fewer forward passes than requests
        for t, r in zip(texts, rs):                                          # each got its own answer
            assert r.json()["label"] == loader.predict(t)["label"]


class FailingLoader(SlowLoader):
    "Fails every batch that holds a text with 'boom' in it."
    def predict_batch(self, texts, batch_size=None):
        time.sleep(self.delay)
        self.sizes.append(len(texts))
        if any("boom" in t for t in texts): raise RuntimeError("model failed")
        return self.inner.predict_batch(texts, batch_size)


def test_model_failure_is_a_500_and_the_worker_survives(loader):
    with TestClient(create_app(loader=FailingLoader(loader, delay=0)), raise_server_exceptions=False) as c:
        r = c.post("/predict", json={"text": "boom"})
        assert r.status_code == 500 and "the model failed on this request: RuntimeError: model failed" in r.json()["detail"]
        assert_healthy(c)


def test_one_failing_text_fails_only_its_own_request(loader):
    failing = FailingLoader(loader, delay=0.2)
    with TestClient(create_app(loader=failing, max_batch=32, max_wait_ms=50), raise_server_exceptions=False) as c:
        texts = [HEADLINES[i % 4] for i in range(12)]
        texts[5] = "boom goes the market"
        with ThreadPoolExecutor(12) as ex:
            rs = list(ex.map(lambda t: c.post("/predict", json={"text": t}), texts))
        assert max(failing.sizes) > 1, failing.sizes                       # the bad text was batched with others ...
        assert [r.status_code for r in rs] == [500 if i == 5 else 200 for i in range(12)], [r.text for r in rs]
        for t, r in zip(texts, rs):                                          # ... and they got their own answers
            if r.status_code == 200: assert r.json()["label"] == loader.predict(t)["label"]
        assert_healthy(c)


def test_max_batch_is_the_forward_pass_size(ckpt):
    ldr = ModelLoader(ckpt, dtype="fp32")               # batch_size 32 by default
    model, shapes = ldr.model, []

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model
        def forward(self, **kw):
            shapes.append(tuple(kw["input_ids"].shape))
            return self.inner(**kw)

    ldr.model = Recording()
    with TestClient(create_app(loader=ldr, max_batch=64)) as c:
        assert [s[0] for s in shapes] == [1, 64]     # the warm-up at startup: one text, then a full batch
        shapes.clear()
        r = c.post("/predict/batch", json={"texts": [HEADLINES[2]] * 64})
        assert r.status_code == 200 and c.get("/info").json()["batching"]["max_batch"] == 64
    assert [s[0] for s in shapes] == [64], shapes


def test_long_texts_are_cut_before_tokenizing(loader, client):
    seen = []
    tok = loader.tokenizer

    class Recording:
        def __getattr__(self, name): return getattr(tok, name)
        def __call__(self, texts, **kw):
            seen.extend(map(len, texts))
            return tok(texts, **kw)

    texts = [(HEADLINES[i % 4] + " ") * 170 for i in range(64)]      # 9,000 to 10,000 characters each
    loader.cut_chars = None                                          # reference: each text tokenized whole
    try: expected = loader.predict_batch(texts[:4])
    finally: loader.cut_chars = 8 * loader.max_length
    loader.tokenizer = Recording()
    try: r = client.post("/predict/batch", json={"texts": texts})
    finally: loader.tokenizer = tok
    assert r.status_code == 200
    assert max(seen) <= 8 * loader.max_length < len(texts[0]), max(seen)   # the tokenizer never saw a whole text
    for e, p in zip(expected, r.json()["predictions"]):                    # and the answers did not change
        assert p["label"] == e["label"] and p["truncated"] is True
        for k in LABELS: assert abs(p["scores"][k] - e["scores"][k]) < 1e-5


def test_page_shows_the_folder_name_escaped(ckpt, tmp_path):
    odd = tmp_path / "<img src=x onerror=alert(1)>"
    shutil.copytree(ckpt, odd)
    with TestClient(create_app(loader=ModelLoader(odd, dtype="fp32"))) as c:
        assert c.get("/info").json()["model"] == odd.name
        page = c.get("/").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img" not in page


# ---------------------------------------------------------------- precision

@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")])
def test_auto_dtype_follows_the_cpu(ckpt, monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    ldr = ModelLoader(ckpt, device="cpu")
    assert ldr.dtype == expected
    assert next(ldr.model.parameters()).dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    with TestClient(create_app(loader=ldr)) as c:
        assert c.get("/info").json()["dtype"] == expected
        preds = c.post("/predict/batch", json={"texts": HEADLINES[:4]}).json()["predictions"]
    assert [p["label"] for p in preds] == ["Sci/Tech", "Sports", "Business", "World"]


@pytest.mark.parametrize("capability, expected", [((8, 0), "bf16"), ((7, 5), "fp16")])
def test_auto_dtype_on_gpus(monkeypatch, capability, expected):
    "By compute capability, what the GPU reports (not `is_bf16_supported`, which counts emulation: yes on a T4)."
    from distrinews.loader import resolve_dtype
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert resolve_dtype("auto", torch.device("cuda")) == expected     # a T4 (7.5) has no bf16: fp16


def test_bf16_answers_do_not_depend_on_the_batch(ckpt):
    ldr = ModelLoader(ckpt, dtype="bf16")
    batched = ldr.predict_batch(HEADLINES * 3, batch_size=5)
    for t, b in zip(HEADLINES * 3, batched):
        one = ldr.predict(t)
        assert one["label"] == b["label"]
        for k in LABELS: assert abs(one["scores"][k] - b["scores"][k]) < 1e-3


# ---------------------------------------------------------------- loader, int8, naive baseline

def test_loader_refuses_pickle_only_checkpoint(tmp_path, ckpt):
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelError, match="only pickle weights.*never unpickles"):
        ModelLoader(tmp_path)
    with pytest.raises(ModelError, match="no config.json"):
        (tmp_path / "empty").mkdir(); ModelLoader(tmp_path / "empty")
    with pytest.raises(ModelError, match="no such checkpoint folder"):
        create_app(tmp_path / "missing")


def test_int8_app(ckpt):
    with TestClient(create_app(ckpt, quantize=True)) as c:
        assert c.get("/info").json()["quantized"] is True
        preds = c.post("/predict/batch", json={"texts": HEADLINES[:4]}).json()["predictions"]
        assert [p["label"] for p in preds] == ["Sci/Tech", "Sports", "Business", "World"]


def test_naive_baseline_agrees(ckpt, client):
    with TestClient(naive_app(ckpt)) as c:
        for t in HEADLINES[:4]:
            a, b = c.post("/predict", json={"text": t}).json(), client.post("/predict", json={"text": t}).json()
            assert a["label"] == b["label"] and set(a["scores"]) == set(LABELS)
            assert abs(a["confidence"] - b["confidence"]) < 1e-4


# ---------------------------------------------------------------- over real sockets: abandoned and half-sent requests

@contextlib.contextmanager
def live_server(app, **kw):
    "uvicorn serving `app` on a free loopback port in a thread of this process; yields (url, port)."
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           log_config=None, **kw))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.time()
    while not server.started:
        assert th.is_alive() and time.time() - t0 < 30, "uvicorn did not start"
        time.sleep(0.05)
    try: yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        th.join(15)


class CountingLoader(SlowLoader):
    "Counts the texts it computes; each forward pass takes at least `delay` seconds."
    def __init__(self, loader, delay):
        super().__init__(loader, delay)
        self.computed = 0

    def predict_batch(self, texts, batch_size=None):
        self.computed += len(texts)
        return super().predict_batch(texts, batch_size)


async def _impatient_clients(url, n, texts, timeout):
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=n)) as c:
        async def one():
            try: return (await c.post("/predict/batch", json={"texts": texts})).status_code
            except httpx.TimeoutException: return "gave up"
        return await asyncio.gather(*[one() for _ in range(n)])


def test_abandoned_requests_are_not_computed(loader):
    counting = CountingLoader(loader, delay=0.1)
    app = create_app(loader=counting, max_batch=64, queue_size=1000, queue_texts=100_000)   # only disconnects limit it
    texts = [HEADLINES[i % 4] for i in range(64)]
    with live_server(app) as (url, _):
        results = asyncio.run(_impatient_clients(url, 150, texts, timeout=0.3))
        t0 = time.time()
        while app.state.batcher.waiting and time.time() - t0 < 60: time.sleep(0.1)   # let the server settle
        time.sleep(0.5)
        assert httpx.get(url + "/health").json()["status"] == "ok"
    submitted = 64 * 150
    assert results.count("gave up") >= 100, results
    assert counting.computed < 0.2 * submitted, (counting.computed, submitted)
    assert app.state.batcher.dropped > 0.5 * submitted


def test_queue_is_bounded_by_texts(loader):
    app = create_app(loader=SlowLoader(loader, delay=0.3), max_batch=64, queue_texts=128)
    with live_server(app) as (url, _):
        codes = asyncio.run(_impatient_clients(url, 10, [HEADLINES[0]] * 64, timeout=30))
    assert codes.count(503) >= 6 and 200 in codes, codes           # 2 requests of 64 texts fill the queue


def _raw(port, data, close=False, read=True, wait=5.0):
    "Send raw bytes on a new connection; the first line of the answer ('' if none)."
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        if close: return ""
        try: return s.recv(4096).decode(errors="replace").split("\r\n")[0] if read else ""
        except socket.timeout: return ""


HALF = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"text": "Stocks ')


def test_half_sent_body_gets_408_and_closed_client_logs_nothing(loader):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("uvicorn.error")
    log.addHandler(handler)
    try:
        with live_server(create_app(loader=loader, body_timeout_s=0.5)) as (url, port):
            t0 = time.time()
            assert "408" in _raw(port, HALF), "a half-sent body must get 408"
            assert time.time() - t0 < 4
            for _ in range(3): _raw(port, HALF, close=True)          # hang up mid-body
            time.sleep(1.0)
            assert httpx.post(url + "/predict", json={"text": HEADLINES[1]}).json()["label"] == "Sports"
    finally: log.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert not any("Exception in ASGI application" in m for m in messages), messages


# ---------------------------------------------------------------- distrinews serve: flags checked before anything starts

def _serve_args(*argv):
    parser = argparse.ArgumentParser()
    add_serve_args(parser)                     # the flags as `distrinews serve` defines them (08_cli)
    return parser.parse_args(list(argv))


def test_serve_refuses_bad_and_busy_ports(capsys, tmp_path):
    assert run_serve(_serve_args("--checkpoint", str(tmp_path / "nope"), "--port", "99999")) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--port: must be in 1..65535, got 99999" in err, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert run_serve(_serve_args("--checkpoint", str(tmp_path / "nope"), "--port", str(port))) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and f"127.0.0.1:{port} is already in use" in err, err


def test_serve_passes_dtype_batch_and_connection_cap(ckpt, monkeypatch):
    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.update(server=self, app=self.config.app,
                                                                                      limit_concurrency=self.config.limit_concurrency))
    assert run_serve(_serve_args("--checkpoint", str(ckpt), "--port", str(free_port()), "--int8",
                                 "--max-batch", "48", "--max-connections", "7")) == 0
    assert seen["limit_concurrency"] == 7
    assert type(seen["server"]).shutdown is not uvicorn.Server.shutdown     # its shutdown stops the batcher first
    with TestClient(seen["app"]) as c:
        info = c.get("/info").json()
    assert info["dtype"] == "int8" and info["batching"]["max_batch"] == 48


# ---------------------------------------------------------------- shutdown (issue 24, item 7)

def test_stopping_the_batcher_answers_queued_requests_503_not_500(loader):
    "Requests queued when the batcher stops get 503 + Retry-After; the one in the model gets its answer."
    slow = SlowLoader(loader, delay=0.5)
    app = create_app(loader=slow, max_batch=1)
    with live_server(app) as (url, _):
        slow.sizes.clear()                                 # the warm-up at startup: not a request
        async def load():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                reqs = [asyncio.ensure_future(c.post("/predict", json={"text": f"{HEADLINES[i % 4]} {i}"})) for i in range(6)]
                b = app.state.batcher
                t0 = time.time()
                while b.waiting < 4 and time.time() - t0 < 20: await asyncio.sleep(0.02)   # one in the model, the rest queued
                assert b.waiting >= 4, b.waiting
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(b.stop(), b.loop))   # what the shutdown does
                after = await c.get("/health")
                return await asyncio.gather(*reqs), after
        rs, health = asyncio.run(load())
    codes = [r.status_code for r in rs]
    assert 500 not in codes and codes.count(200) >= 1 and codes.count(503) >= 4, [r.text for r in rs]
    for r in rs:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.json()["detail"] == "the server is shutting down; retry shortly"
    assert health.status_code == 503 and health.json()["status"] == "shutting down"
    assert len(slow.sizes) == codes.count(200)            # nothing computed for a request answered 503


def test_the_app_lifespan_stops_and_restarts_the_batcher(loader):
    app = create_app(loader=loader)
    b = app.state.batcher
    for _ in range(2):                                    # a second startup opens it again
        with TestClient(app) as c: assert_healthy(c)
        assert b.closed and b.task.done() and b.model_thread._shutdown      # worker and model thread ended


def test_a_cancelled_route_drops_its_queued_job(loader):
    "A route cancelled while its texts wait (a shutdown that gives up on it) takes them out of the queue."
    slow = SlowLoader(loader, delay=0.3)
    batcher = api.MicroBatcher(slow.predict_batch, max_batch=1)

    class Connected:                                      # a request whose client never hangs up
        async def receive(self): await asyncio.Event().wait()

    async def scenario():
        first = batcher.enqueue([HEADLINES[0]])           # keeps the model busy
        await asyncio.sleep(0.05)
        route = asyncio.ensure_future(api.wait_for_answer(Connected(), batcher.enqueue([HEADLINES[1]])))
        await asyncio.sleep(0.05)
        route.cancel()
        with contextlib.suppress(asyncio.CancelledError): await route
        await first
        await asyncio.sleep(0.5)                          # time for a second forward pass, if it were queued
        await batcher.stop()
    asyncio.run(scenario())
    assert slow.sizes == [1] and batcher.dropped == 1, (slow.sizes, batcher.dropped)
