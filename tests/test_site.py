"""tools/site_check.py, the site check CI runs before deploy (issue 31): proven to fail on a tiny bad site (two
sources for one page, a broken link and anchor, a link out of the site, a doc link inside a link, a widget without
state) and to pass on a good one. Needs pandoc (CI installs Debian's); the whole site is checked by .ci/run."""
from __future__ import annotations
import json, shutil
from pathlib import Path

import pytest

from helpers import load_script

site_check = load_script("tools/site_check.py", "site_check")
URL = "https://example.org/site/"
needs_pandoc = pytest.mark.skipif(shutil.which("pandoc") is None, reason="pandoc not installed (apt-get install pandoc)")


def nb(cells: list[dict], metadata: dict | None = None) -> str:
    return json.dumps({"cells": cells, "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 5})


def md(s: str) -> dict: return {"cell_type": "markdown", "metadata": {}, "source": s}


def widget(mid: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "source": "w",
            "outputs": [{"output_type": "execute_result", "execution_count": None, "metadata": {},
                         "data": {"text/plain": "VBox()", site_check.WIDGET_VIEW: {"model_id": mid, "version_major": 2}}}]}


def good_site(d: Path) -> Path:
    (d / "concepts").mkdir(parents=True)
    (d / "index.ipynb").write_text(nb([md("# Home\n\n[bench](07_bench.ipynb#results) [c](concepts/a.qmd#why) "
                                          "[api](https://example.org/site/bench.html#run_bench) [abs](https://x.org/y)")]))
    (d / "07_bench.ipynb").write_text(nb([md("---\ntitle: Bench\noutput-file: bench.html\n---\n\n"), md("## Results\n\n### run_bench\n\n"
                                             "[home](index.ipynb) [up](#results) [`run_bench`](https://example.org/site/bench.html#run_bench)")]))
    (d / "concepts" / "a.qmd").write_text("---\ntitle: A\n---\n\n## Why\n\n[chapter](../07_bench.ipynb) [page](../bench.html#results)\n"
                                          "```python\nx = '[not](a link)'\n```\n")
    return d


@needs_pandoc
def test_a_good_site_passes(tmp_path):
    problems, n = site_check.check_site(good_site(tmp_path), URL)
    assert problems == [] and n["pages"] == 3 and n["internal"] >= 7


@needs_pandoc
def test_each_kind_of_bad_page_fails(tmp_path, capsys):
    d = good_site(tmp_path)
    (d / "bench.qmd").write_text("---\ntitle: Results\n---\n\nthe same page name as 07_bench.ipynb\n")
    (d / "06_api.ipynb").write_text(nb([md("# API\n\n[gone](missing.qmd) [nh](07_bench.ipynb#nope) [out](../concepts/models.md) "
                                           "[[`Loader`](https://example.org/site/loader.html#loader)](05_loader.ipynb)"),
                                        widget("abc"), widget("kept")],
                                       {"widgets": {site_check.WIDGET_STATE: {"state": {"kept": {}}}}}))
    problems, _ = site_check.check_site(d, URL)
    text = "\n".join(problems)
    assert "07_bench.ipynb and bench.qmd: both render to bench.html" in text or "bench.qmd and 07_bench.ipynb" in text
    assert "(missing.qmd) resolves to no page" in text
    assert "(07_bench.ipynb#nope) bench.html has no anchor #nope" in text
    assert "(../concepts/models.md) leaves the site" in text
    assert "literal '](' in the rendered text" in text
    assert "06_api.ipynb cell 1: a widget output without its saved state" in text and "cell 2" not in text
    assert site_check.main(["--proc", str(d)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("site check: 5 pages rendered with pandoc") and "problems" in out


def test_page_names_follow_nbdev():
    from nbdev.doclinks import _nbpath2html
    for name in ("07_benchmarks.ipynb", "04e_fsdp.ipynb", "index.ipynb", "00_Config.ipynb"):
        assert site_check.nbdev_page_name(name) == _nbpath2html(Path(name)).name
