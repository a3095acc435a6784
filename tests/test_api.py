"""The inference API (06_api) and loader (05_loader) through FastAPI's TestClient: the schema, every class of bad
input (each answered with a 4xx that names the problem, the service healthy afterwards), back-pressure, and the
same answer for a text alone and inside a batch. CPU only, no network: a tiny checkpoint is trained in the test."""
import json, time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from distrinews.api import MAX_BODY, MAX_CHARS, MAX_TEXTS, create_app, naive_app
from distrinews.config import LABELS
from distrinews.loader import ModelLoader, tiny_checkpoint
from distrinews.model import ModelError

HEADLINES = ["NASA scientists discovered a distant planet in orbit.",
             "The Yankees rallied past the league leaders in overtime.",
             "Oil prices tumbled after weak sales on Wall Street.",
             "Peace negotiators signed a ceasefire in the capital.",
             "Mars", "Shares of the retailer jumped on strong earnings " * 6]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best")


@pytest.fixture(scope="module")
def loader(ckpt):
    return ModelLoader(ckpt)


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
    assert info["model"] == str(ckpt) and info["model_type"] == "distilbert"
    assert info["max_length"] == 128 and info["quantized"] is False
    assert info["version"] == __import__("distrinews").__version__
    assert info["limits"] == {"max_texts": MAX_TEXTS, "max_chars": MAX_CHARS, "max_body_bytes": MAX_BODY, "queue_size": 256}


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

    def predict_batch(self, texts):
        time.sleep(self.delay); self.sizes.append(len(texts))
        return self.inner.predict_batch(texts)


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
    def predict_batch(self, texts):
        if any("boom" in t for t in texts): raise RuntimeError("model failed")
        return self.inner.predict_batch(texts)


def test_model_failure_is_a_500_and_the_worker_survives(loader):
    with TestClient(create_app(loader=FailingLoader(loader)), raise_server_exceptions=False) as c:
        assert c.post("/predict", json={"text": "boom"}).status_code == 500
        assert_healthy(c)


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
