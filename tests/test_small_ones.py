"""Issue 30, item 9: the smaller holes, each with a real file, a real request or a real command."""
import subprocess

import pytest
from fastapi.testclient import TestClient

from distrinews.data import DataError, load_local
from helpers import CLI, cli_error


@pytest.mark.parametrize("name, body, says", [
    ("huge_field", "text,label\n" + "x" * 200_000 + ",1\nok,2\n", "line 2: a field of more than 131,072 characters"),
    ("stray_quote", 'text,label\nfine text,1\n"Stocks rally on Wall Street,2\nOil prices fall,2\n"Next one",3\n',
     "line 3: malformed CSV"),
    ("stray_quote_to_end", 'text,label\n"Stocks rally on Wall Street,2\nOil prices fall,2\nNASA launches a probe,3\n',
     "line 2: malformed CSV (unexpected end of data)"),
    ("two_label_columns", "text,label,label\nStocks rally,2,1\n", "column(s) label appear more than once in the header"),
])
def test_malformed_csv_is_one_line_naming_the_line(tmp_path, name, body, says):
    p = tmp_path / f"{name}.csv"
    p.write_text(body)
    with pytest.raises(DataError) as e: load_local(p)     # before: a _csv.Error traceback, or rows silently merged / relabelled
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_quoted_fields_with_quotes_and_newlines_still_load(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text('text,label\n"He said ""hi"", then left",1\n"two\nlines",2\n')
    ds = load_local(p)
    assert ds["text"] == ['He said "hi", then left', "two\nlines"] and ds["label"] == [1, 2]


@pytest.fixture(scope="module")
def client(ckpt):
    from distrinews.api import create_app
    with TestClient(create_app(ckpt, dtype="fp32")) as c: yield c


def test_page_sends_security_headers(client):
    h = client.get("/").headers                       # before: none of them
    assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self' https://huggingface.co" in h["content-security-policy"]
    assert "default-src 'self'" in h["content-security-policy"]


@pytest.mark.parametrize("text", ["\u200b", "\u0000", "\u200b \u200d\t"])
def test_invisible_only_texts_are_refused_like_blank_ones(client, text):
    r = client.post("/predict", json={"text": text})   # before: 200 with a label
    assert r.status_code == 422 and "only invisible or control characters" in r.json()["detail"]
    r = client.post("/predict/batch", json={"texts": ["Stocks rally", text]})
    assert r.status_code == 422 and r.json()["detail"].startswith("texts[1]: ")


def test_predict_refuses_invisible_text_and_non_utf8_stdin_in_one_line(ckpt):
    rc, err = cli_error(["predict", "--checkpoint", str(ckpt), "\u200b"])
    assert rc == 2 and "texts[0]: only invisible or control characters" in err
    r = subprocess.run([*CLI, "predict", "--checkpoint", str(ckpt), "-"],
                       input=b"Stocks rally on Wall Street\n\xff\xfe broken bytes\n", capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "distrinews predict: error: stdin line 2: not valid UTF-8 (byte 0xff at column 1)"
