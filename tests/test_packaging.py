"""The package as installers get it (issue 31, items 4 and 5): the model card's install command is one that works,
the sdist ships the tests whole or not at all, the README (PyPI's long description) has no relative links, the
benchmark's messages say where the report script lives, and the declared dependency floors have one home that
.ci/run installs (tools/floors.txt, the same numbers as settings.ini)."""
from __future__ import annotations
import re, subprocess, sys, tarfile

from helpers import ROOT, load_script, settings

FLOORS = ROOT / "tools" / "floors.txt"


def test_model_card_says_an_install_command_that_works(tmp_path):
    from distrinews.model import write_model_card
    from test_publish import SUMMARY
    text = write_model_card(tmp_path, SUMMARY).read_text(encoding="utf-8")
    assert "`pip install distrinews`" not in text, "no package index serves distrinews: the card must not say so"
    assert f"pip install git+{settings()['git_url']}" in text


def test_sdist_ships_the_tests_whole_or_not_at_all(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with tarfile.open(tmp_path / r.stdout.strip().splitlines()[-1]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    shipped = {n for n in names if n.startswith("tests/")}
    whole = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("*.py")}
    assert not shipped or shipped >= whole, f"the sdist ships some tests without what they import: {sorted(whole - shipped)}"
    assert "distrinews/static/index.html" in names and "settings.ini" in names


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)")


def test_readme_links_are_absolute():
    "README.md is the long description on PyPI, where a relative link resolves nowhere."
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    relative = [t for t in _LINK.findall(text) if not re.match(r"^(https?:|mailto:|#)", t)]
    assert not relative, f"relative links in README.md (make them absolute in nbs/index.ipynb's output, .ci/readme.py): {relative}"


def test_bench_names_where_the_report_script_is():
    from distrinews.cli import build_parser
    from distrinews.config import REPORT_URL
    assert REPORT_URL.startswith(settings()["git_url"]) and REPORT_URL.endswith("/benchmarks/report.py")
    assert (ROOT / "benchmarks" / "report.py").is_file()
    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    assert REPORT_URL in next(a.help for a in bench._actions if a.dest == "out")
    import inspect, distrinews.servebench as sb
    assert "REPORT_URL" in inspect.getsource(sb.run_bench)   # the message `distrinews bench` prints at the end


def test_floors_file_has_the_numbers_of_settings_ini(tmp_path):
    fc = load_script("tools/floors_check.py", "floors_check")
    assert FLOORS.is_file(), "tools/floors.txt (the constraints file .ci/run installs) is missing"
    assert fc.problems(ROOT) == []
    assert {"torch", "transformers", "datasets", "accelerate"} <= set(fc.file_floors())
    for line in FLOORS.read_text().splitlines():   # every pin says why it is where it is
        if "==" in line and not line.startswith("#"): assert "#" in line, f"tools/floors.txt: no reason beside {line!r}"
    # the check itself: a floor raised in one place only is reported
    (tmp_path / "tools").mkdir()
    (tmp_path / "settings.ini").write_text("[DEFAULT]\nrequirements = torch>=2.6 datasets>=2.21 fastcore>=1.10,<2\n")
    (tmp_path / "tools" / "floors.txt").write_text("torch==2.6  # x\ndatasets==2.19  # y\nfastcore==1.10  # z\npandas==2.0  # w\n")
    assert fc.problems(tmp_path) == ["datasets: settings.ini says >=2.21, tools/floors.txt says 2.19",
                                     "pandas: tools/floors.txt pins 2.0, settings.ini declares no such floor"]
