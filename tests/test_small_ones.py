"""Issue 30, item 9: the smaller holes, each with a real file, a real request or a real command."""
import contextlib, io, json, subprocess, sys

import pytest
from fastapi.testclient import TestClient

from distrinews.data import DataError, load_local


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
