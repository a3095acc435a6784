"""The documentation site and the course material: configuration, sidebar, links, README, chapter structure,
the architecture page, and what the docs build executes. Fast, no network, no Quarto (the site itself is
rendered by .github/workflows/deploy.yaml)."""
from __future__ import annotations
import ast, json, os, re, shutil, subprocess, sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, settings

NBS = ROOT / "nbs"
CHAPTERS = sorted(p.stem for p in (Path(__file__).resolve().parents[1]/"nbs").glob("[0-9][0-9]*.ipynb"))   # every numbered chapter
CONCEPTS = ["ddp_vs_dataparallel", "allreduce", "distributed_sampler", "eval_dedup", "mixed_precision",
            "grad_accumulation", "exact_resume", "serving_under_load"]
READING_ORDER = (["index.ipynb", "kaggle_colab.qmd", "concepts/index.qmd"] + [f"concepts/{c}.qmd" for c in CONCEPTS]
                 + [f"{c}.ipynb" for c in CHAPTERS] + ["publish.qmd", "benchmark_results.qmd", "architecture.qmd"])
GH = "https://github.com/distrinews/distrinews/blob/main/nbs"


def load_yaml(name: str) -> dict:
    data = yaml.safe_load((NBS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"nbs/{name} is not a YAML mapping"
    return data


# ---------------------------------------------------------------- reading pages

def doc_pages() -> list[Path]:
    "Every page of the site: .ipynb and .qmd files under nbs/, skipping names starting with _ or . as nbdev does."
    return sorted(p for p in NBS.rglob("*") if p.suffix in (".ipynb", ".qmd") and p.is_file()
                  and not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts))


def cells(nb: Path) -> list[dict]:
    out = []
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        s = c.get("source", "")
        out.append({**c, "source": "".join(s) if isinstance(s, list) else s})
    return out


def front_matter(text: str) -> tuple[dict, str]:
    "(YAML front matter, body) of a .qmd page."
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    return (yaml.safe_load(m.group(1)) or {}, text[m.end():]) if m else ({}, text)


def markdown_of(page: Path) -> str:
    "The markdown a reader sees: the markdown cells of a notebook, the body of a .qmd or .md page."
    if page.suffix == ".ipynb": return "\n\n".join(c["source"] for c in cells(page) if c["cell_type"] == "markdown")
    return front_matter(page.read_text(encoding="utf-8"))[1]


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def strip_fences(md: str) -> str:
    "`md` without its fenced code blocks (Mermaid diagrams included)."
    out, fence = [], None
    for line in md.split("\n"):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence): fence = None
            continue
        if m: fence = m.group(1); continue
        out.append(line)
    return "\n".join(out)


def strip_code(md: str) -> str:
    "`md` without fenced code blocks and inline code spans, where links are not links."
    return re.sub(r"(`+).+?\1", "", strip_fences(md))


_MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")


def links(md: str) -> list[str]:
    text = strip_code(md)
    return _MD_LINK.findall(text) + _REF_LINK.findall(text) + _HTML_LINK.findall(text)


def slug(heading: str) -> str:
    "The id pandoc (so Quarto) gives a heading."
    h = re.sub(r"\{[^}]*\}\s*$", "", heading)
    h = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", h).replace("`", "")
    h = re.sub(r"[^\w\s.-]", "", h.strip().lower())
    h = re.sub(r"\s+", "-", h)
    h = re.sub(r"^[^a-z]+", "", h)
    return h or "section"


def anchors(page: Path) -> set[str]:
    "Ids a link to `page` may point at: its headings (auto or `{#id}`) and, for notebooks, documented names."
    md = strip_fences(markdown_of(page))
    ids = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*$", md, re.M):
        explicit = re.search(r"\{#([\w.-]+)[^}]*\}\s*$", m.group(1))
        ids.add(explicit.group(1) if explicit else slug(m.group(1)))
    if page.suffix == ".ipynb":
        for c in cells(page):
            if c["cell_type"] == "code": ids |= {n.lower() for n in re.findall(r"^(?:def|class)\s+(\w+)", c["source"], re.M)}
    return ids


def resolve(page: Path, target: str) -> str | None:
    "None when relative link `target` on `page` resolves to an existing file (and heading), else what is wrong."
    if re.match(r"^[a-zA-Z][\w+.-]*:", target) or target.startswith(("/", "{{")): return None   # URL, site path, shortcode
    path, _, frag = target.partition("#")
    path = path.split("?")[0]
    dest = (page.parent / path) if path else page
    if path and dest.suffix == ".html":   # a link to the rendered page: its source must exist
        found = [dest.with_suffix(s) for s in (".ipynb", ".qmd", ".md") if dest.with_suffix(s).exists()]
        if not found: return f"no page for {path} (no .ipynb/.qmd/.md beside it)"
        dest = found[0]
    if not dest.exists(): return f"{path} does not exist"
    if frag and dest.suffix in (".ipynb", ".qmd", ".md") and dest.name != "README.md" and frag not in anchors(dest):
        return f"{path or dest.name} has no heading #{frag}"
    return None


# ---------------------------------------------------------------- site configuration

def test_config_files_parse():
    q, side, nb = load_yaml("_quarto.yml"), load_yaml("sidebar.yml"), load_yaml("nbdev.yml")
    assert q["project"]["type"] == "website"
    assert {"nbdev.yml", "sidebar.yml"} <= set(q["metadata-files"])
    assert q["format"]["html"]["mermaid"]["theme"] in ("default", "dark", "forest", "neutral")
    assert side["website"]["sidebar"]["contents"]
    assert nb["project"]["output-dir"]


def test_site_urls_agree_with_settings():
    "nbdev_docs rewrites nbs/nbdev.yml from settings.ini; the committed copy must already say the same."
    cfg, nb = settings(), load_yaml("nbdev.yml")
    assert cfg.getboolean("custom_sidebar"), "settings.ini: custom_sidebar must be True, or nbdev overwrites nbs/sidebar.yml"
    w = nb["website"]
    assert w["site-url"] == cfg["doc_host"] + cfg["doc_baseurl"]
    assert w["repo-url"] == cfg["git_url"]
    assert w["repo-branch"] == cfg["branch"]
    assert w["title"] == cfg["title"]
    assert nb["project"]["output-dir"] == cfg["doc_path"]
    assert cfg["git_url"].rstrip("/").split("/")[-2:] == [cfg["user"], cfg["repo"]]


def sidebar_pages() -> list[str]:
    def walk(items):
        for it in items:
            if isinstance(it, str): yield it
            elif isinstance(it, dict):
                for k in ("href", "file"):
                    if isinstance(it.get(k), str): yield it[k]
                yield from walk(it.get("contents", []))
    return list(walk(load_yaml("sidebar.yml")["website"]["sidebar"]["contents"]))


def test_sidebar_pages_exist():
    missing = [p for p in sidebar_pages() if not (NBS / p).is_file()]
    assert not missing, f"pages listed in nbs/sidebar.yml that do not exist (yet): {missing}"


def test_sidebar_reading_order():
    "index, then Kaggle/Colab, the concepts, the chapters 00-08, the benchmarks, the architecture."
    assert sidebar_pages() == READING_ORDER


def test_every_page_is_in_the_sidebar():
    listed = set(sidebar_pages())
    orphans = [p.relative_to(NBS).as_posix() for p in doc_pages() if p.relative_to(NBS).as_posix() not in listed]
    assert not orphans, f"pages missing from nbs/sidebar.yml (add them in reading order): {orphans}"


# ---------------------------------------------------------------- links

def test_relative_links_resolve():
    "Every relative link (and #heading) in every notebook, .qmd page and README.md points at something that exists."
    dangling = []
    for page in doc_pages() + [ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8") if page.suffix == ".md" else markdown_of(page)
        for t in links(text):
            if (why := resolve(page, t)): dangling.append(f"{page.relative_to(ROOT)}: ({t}) {why}")
    assert not dangling, "dangling links:\n  " + "\n  ".join(dangling)


def test_link_checker_itself(tmp_path):
    (tmp_path / "a.qmd").write_text("---\ntitle: A\n---\n## Two words `x`\n[ok](b.ipynb) [bad](c.ipynb) "
                                    "[h](a.qmd#two-words-x) [nh](a.qmd#nope) `[code](d.ipynb)` [w](https://x.org/y)\n"
                                    "```{mermaid}\nflowchart LR\n  a[\"[m](e.ipynb)\"]\n```\n")
    (tmp_path / "b.ipynb").write_text(json.dumps({"cells": []}))
    page = tmp_path / "a.qmd"
    found = links(markdown_of(page))
    assert found == ["b.ipynb", "c.ipynb", "a.qmd#two-words-x", "a.qmd#nope", "https://x.org/y"]
    assert [t for t in found if resolve(page, t)] == ["c.ipynb", "a.qmd#nope"]
    assert slug("Process architecture during training") == "process-architecture-during-training"
    assert slug("`DistributedSampler` and `set_epoch`") == "distributedsampler-and-set_epoch"


# ---------------------------------------------------------------- README

def test_readme_matches_index():
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme.py"), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr + r.stdout


def test_readme_generator(tmp_path):
    sys.path.insert(0, str(ROOT / ".ci"))
    try: import readme
    finally: sys.path.pop(0)
    nbs = tmp_path / "nbs"; nbs.mkdir()
    (nbs / "04_trainer.ipynb").write_text("{}"); (nbs / "kaggle_colab.qmd").write_text("")
    md = readme.rewrite_links("[t](04_trainer.ipynb#x) [k](kaggle_colab.qmd) `[c](04_trainer.ipynb)` [u](https://a.b/c.ipynb)\n"
                              "```\n[f](04_trainer.ipynb)\n```", nbs, "https://site/base", "https://gh/o/r/blob/main")
    assert md == ("[t](https://gh/o/r/blob/main/nbs/04_trainer.ipynb#x) [k](https://site/base/kaggle_colab.html) `[c](04_trainer.ipynb)` "
                  "[u](https://a.b/c.ipynb)\n```\n[f](04_trainer.ipynb)\n```")
    assert readme.directives("#| hide\n#|echo: false\nx = 1\n#| not a directive") == {"hide": "", "echo": "false"}


# ---------------------------------------------------------------- chapters

@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_structure(name):
    "A chapter opens with `# Title` and a `> summary` line, and has a 'Questions for the reader' section."
    nb = NBS / f"{name}.ipynb"
    assert nb.is_file(), f"nbs/{name}.ipynb does not exist (yet)"
    md = [c["source"] for c in cells(nb) if c["cell_type"] == "markdown"]
    assert md, f"{name}: no markdown cells"
    first = md[0].strip().splitlines()
    assert first and re.match(r"^# \S", first[0]), f"{name}: the first markdown cell must start with an H1 `# Title`"
    assert any(re.match(r"^> \S", l) for l in first[1:]), f"{name}: the first markdown cell needs a `> summary` line"
    q = [s for s in md if re.search(r"^#{2,3} Questions for the reader\s*$", s, re.M)]
    assert q, f"{name}: no 'Questions for the reader' section"
    assert re.search(r"^\s*1\. \S", q[-1].split("Questions for the reader", 1)[1], re.M), \
        f"{name}: the 'Questions for the reader' section has no numbered questions"


def _top_level_calls(tree: ast.Module) -> set[str]:
    "Names of functions called when the cell runs (calls inside def/class/lambda bodies are not run)."
    names, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)): continue
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name): names.add(f.id)
            elif isinstance(f, ast.Attribute) and f.attr == "notebook_launcher": names.add(f.attr)
        todo.extend(ast.iter_child_nodes(node))
    return names


_DOCS_EXEC = {"export", "exports", "exporti", "exec_doc"}
_LAUNCHES = {"notebook_launcher", "launch", "launch_fn", "train"}


def docs_executed(src: str) -> ast.Module | None:
    "The parsed cell if the docs build (nbdev's exec_show_docs) runs it: exported cells and cells with imports."
    dirs = {m.group(1): m.group(2) for m in re.finditer(r"^\s*#\|\s*([\w-]+):?\s*(.*)$", src, re.M)}
    if dirs.get("eval", "").lower() == "false" or src.strip()[:1] in ("%", "!"): return None
    try: tree = ast.parse(src)
    except SyntaxError: return None
    if dirs.keys() & _DOCS_EXEC or any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)): return tree
    return None


def test_docs_build_starts_no_training():
    """nbdev_docs executes every exported cell and every cell that imports something. Such a cell must not
    also launch processes or train (`notebook_launcher(...)`, `launch(...)`, `train(...)`): the site build would run it."""
    bad = []
    for nb in sorted(NBS.rglob("*.ipynb")):
        if any(p.startswith(("_", ".")) for p in nb.relative_to(NBS).parts): continue
        for i, c in enumerate(cells(nb)):
            if c["cell_type"] != "code" or (tree := docs_executed(c["source"])) is None: continue
            if (calls := _top_level_calls(tree) & _LAUNCHES):
                bad.append(f"{nb.name} cell {i}: calls {sorted(calls)} in a cell the docs build executes; "
                           "move the call into a cell of its own, without imports")
    assert not bad, "\n".join(bad)


def test_docs_execution_rule_itself():
    assert docs_executed("from accelerate import notebook_launcher\nnotebook_launcher(f, num_processes=2)")
    assert _top_level_calls(docs_executed("import accelerate\naccelerate.notebook_launcher(f)")) == {"notebook_launcher"}
    assert docs_executed("notebook_launcher(f, num_processes=2)") is None          # no import: not run by the docs
    assert docs_executed("#| eval: false\nimport x\nlaunch(cfg)") is None
    assert not _top_level_calls(docs_executed("#| export\ndef go(cfg):\n    return launch(cfg)")) & _LAUNCHES
    assert _top_level_calls(docs_executed("from distrinews.train import train\ns = train(cfg)")) & _LAUNCHES
    assert not _top_level_calls(docs_executed("import torch\nmodel.train()")) & _LAUNCHES


# ---------------------------------------------------------------- the course pages

@pytest.mark.parametrize("name", ["index"] + CONCEPTS)
def test_concept_page(name):
    page = NBS / "concepts" / f"{name}.qmd"
    fm, body = front_matter(page.read_text(encoding="utf-8"))
    assert fm.get("title") and fm.get("description"), f"concepts/{name}.qmd: front matter needs a title and a description"
    chapter_links = [t for t in links(body) if re.match(r"^\.\./\d\d[a-z]?_\w+\.ipynb", t)]
    assert chapter_links, f"concepts/{name}.qmd links to no chapter"
    if name == "index":
        assert all(f"{c}.qmd" in body for c in CONCEPTS)
        return
    sections = re.findall(r"^## (.+)$", strip_code(body), re.M)
    assert sections and sections[-1].strip() == "Questions for the reader", f"concepts/{name}.qmd must end with 'Questions for the reader'"
    assert len(re.findall(r"^\d\. \S", body.split("## Questions for the reader")[1], re.M)) >= 3


def test_architecture_page():
    fm, body = front_matter((NBS / "architecture.qmd").read_text(encoding="utf-8"))
    # Quarto draws Mermaid in the browser for HTML; for the commonmark format of _quarto.yml it would need a
    # headless Chrome. The page restricts itself to HTML so the site builds without one.
    assert list(fm.get("format", {})) == ["html"], "architecture.qmd: keep `format: html` in its front matter"
    parts = re.split(r"^```\{mermaid\}\s*$", body, flags=re.M)
    assert len(parts) - 1 >= 5, "architecture.qmd: expected at least 5 Mermaid diagrams"
    kinds = ("flowchart", "graph", "sequenceDiagram", "stateDiagram", "classDiagram")
    for i, after in enumerate(parts[1:], 1):
        diagram, _, prose = after.partition("\n```")
        assert diagram.strip().split()[0] in kinds, f"diagram {i}: unknown Mermaid diagram type"
        assert re.search(r"\]\(\d\d_\w+\.ipynb", prose), f"diagram {i} is not followed by prose that links to a chapter"
    for term in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "NCCL", "gloo", "7860",
                 "micro-batch", "softmax", "all-reduce", "checkpoint"):
        assert term in body, f"architecture.qmd does not mention {term}"


def test_kaggle_colab_page():
    text = (NBS / "kaggle_colab.qmd").read_text(encoding="utf-8")
    for c in CHAPTERS:
        assert f"https://colab.research.google.com/github/distrinews/distrinews/blob/main/nbs/{c}.ipynb" in text, c
        assert f"https://kaggle.com/kernels/welcome?src={GH}/{c}.ipynb" in text, c
    for must in ("GPU T4 x2", "Internet on", "pip install -q git+https://github.com/distrinews/distrinews",
                 "numbers on this site so far come from CPU runs in CI"):
        assert must in text, must


# ---------------------------------------------------------------- the docs build itself

def test_nbdev_proc_nbs(tmp_path):
    """`nbdev_proc_nbs` (the step of nbdev_docs before Quarto) processes every page: run it on a copy of the
    repo with a stand-in `quarto` on PATH (nbdev only checks that one exists; it does not run it here)."""
    repo = tmp_path / "repo"; repo.mkdir()
    for name in ("settings.ini", "setup.py", "pyproject.toml", "README.md"):
        if (ROOT / name).exists(): shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(NBS, repo / "nbs", ignore=shutil.ignore_patterns("_proc", ".ipynb_checkpoints"))
    # a stored output in a shown cell that the docs build does not execute: it must reach _proc/ (and so the site)
    marker = "stored-output-marker 0.1234"
    nb_copy = repo / "nbs" / "01_data.ipynb"
    nb_json = json.loads(nb_copy.read_text(encoding="utf-8"))
    shown = next(c for c in nb_json["cells"] if c["cell_type"] == "code" and not re.match(r"\s*#\|", "".join(c["source"]))
                 and docs_executed("".join(c["source"])) is None)
    shown["outputs"] = [{"output_type": "stream", "name": "stdout", "text": [marker + "\n"]}]
    nb_copy.write_text(json.dumps(nb_json, indent=1), encoding="utf-8")
    lib = settings().get("lib_path", "distrinews")
    shutil.copytree(ROOT / lib, repo / lib, ignore=shutil.ignore_patterns("__pycache__"))
    fake = tmp_path / "bin"; fake.mkdir()
    (fake / "quarto").write_text("#!/bin/sh\nexit 0\n"); (fake / "quarto").chmod(0o755)
    exe = shutil.which("nbdev_proc_nbs") or str(Path(sys.executable).parent / "nbdev_proc_nbs")
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([exe, "--n_workers", "2"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"nbdev_proc_nbs failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    proc = repo / "_proc"
    for page in doc_pages():
        rel = page.relative_to(NBS)
        assert (proc / rel).is_file(), f"nbdev_proc_nbs did not produce _proc/{rel}"
        if page.suffix == ".ipynb" and re.match(r"\d\d_", page.name):
            head = cells(proc / rel)[0]["source"]
            assert head.startswith("---") and "title:" in head, f"_proc/{rel}: no title front matter"
    for name in ("_quarto.yml", "sidebar.yml", "nbdev.yml", "styles.css"): assert (proc / name).is_file(), name
    assert marker in (proc / "01_data.ipynb").read_text(encoding="utf-8"), "nbdev_proc_nbs dropped a stored output"
    assert "```{mermaid}" in (proc / "architecture.qmd").read_text(encoding="utf-8")
    # nbdev regenerated nbs/nbdev.yml from settings.ini: it must equal the committed one
    assert (repo / "nbs" / "nbdev.yml").read_text() == (NBS / "nbdev.yml").read_text()
