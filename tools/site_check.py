#!/usr/bin/env python3
"""The documentation site as readers get it, checked before deploy without Quarto (no registry reachable from CI
ships its binary).

    python tools/site_check.py               # nbdev_proc_nbs on a copy of the repository, render, check
    python tools/site_check.py --proc DIR    # check a folder nbdev_proc_nbs already wrote (the layout of _proc/)

1. `nbdev_proc_nbs` runs in a temporary copy of the repository with a stand-in `quarto` on PATH: nbdev only checks
   that one exists (without it, nbdev tries to install Quarto and runs `pip install -e` into the active environment).
2. Every page of `_proc/` is rendered to HTML by `pandoc` (what Quarto runs underneath): a `.qmd` as it is, a notebook
   as Quarto sees it (markdown cells, code cells, then their outputs: markdown as markdown, html as html, the rest as
   text).
3. The check fails, one line per problem, on
   * two sources with one output page (nbdev names a notebook's page by its own rule, `07_benchmarks.ipynb` ->
     `benchmarks.html`, through the `output-file` it writes; a `.qmd` is `<name>.html`);
   * a relative link, or a link to the site's own URL (nbdev's generated API links), or an `#anchor`, that resolves
     to no page, file or id of the rendered site (show_doc output included);
   * a literal `](` in rendered text, outside code (a markdown link that did not render, e.g. a link inside a link);
   * a widget output saved without its state (blank on a static page).
"""
from __future__ import annotations
import argparse, configparser, json, os, posixpath, re, shutil, subprocess, sys, tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import yaml

ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW, WIDGET_STATE = "application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json"
_SCHEME = re.compile(r"^[a-zA-Z][\w+.-]*:")


def settings(root: Path = ROOT) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(delimiters=["="])
    cp.read(root / "settings.ini", encoding="utf-8")
    return cp["DEFAULT"]


def site_url(root: Path = ROOT) -> str:
    cfg = settings(root)
    return (cfg.get("doc_host", "").rstrip("/") + cfg.get("doc_baseurl", "")).rstrip("/") + "/"


# ---------------------------------------------------------------- step 1: nbdev_proc_nbs, without Quarto

def proc_nbs(root: Path, work: Path, timeout: int = 600) -> Path:
    "Run `nbdev_proc_nbs` on a copy of the repository at `root` in `work`; the processed folder (`work/repo/_proc`)."
    repo, fake = work / "repo", work / "bin"
    repo.mkdir(parents=True); fake.mkdir()
    cfg = settings(root)
    for name in ("settings.ini", "setup.py", "pyproject.toml", "README.md"):
        if (root / name).exists(): shutil.copy2(root / name, repo / name)
    for d in (cfg.get("nbs_path", "nbs"), cfg.get("lib_path", "distrinews")):
        shutil.copytree(root / d, repo / d, ignore=shutil.ignore_patterns("_proc", ".ipynb_checkpoints", "__pycache__"))
    (fake / "quarto").write_text("#!/bin/sh\necho 'stand-in quarto (tools/site_check.py)'\nexit 0\n")
    (fake / "quarto").chmod(0o755)
    bindir = Path(sys.executable).parent
    exe = shutil.which("nbdev_proc_nbs", path=str(bindir)) or shutil.which("nbdev_proc_nbs") or "nbdev_proc_nbs"
    env = {**os.environ, "PATH": os.pathsep.join([str(fake), str(bindir), os.environ.get("PATH", "")]),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    r = subprocess.run([exe, "--n_workers", "2"], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"nbdev_proc_nbs failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return repo / "_proc"


# ---------------------------------------------------------------- step 2: pages, their names, pandoc

def pages(proc: Path) -> list[Path]:
    "The pages Quarto renders: .ipynb/.qmd/.md under `proc`, skipping names starting with _ or . as Quarto does."
    return sorted(p for p in proc.rglob("*") if p.is_file() and p.suffix in (".ipynb", ".qmd", ".md")
                  and not any(part.startswith(("_", ".")) for part in p.relative_to(proc).parts))


def _src(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def front_matter(page: Path) -> dict:
    "The YAML front matter of a page (for a notebook: its first cell, where nbdev writes it)."
    if page.suffix == ".ipynb":
        cs = json.loads(page.read_text(encoding="utf-8")).get("cells", [])
        text = _src(cs[0]) if cs else ""
    else: text = page.read_text(encoding="utf-8")
    m = re.match(r"^\s*---\n(.*?)\n---\s*(\n|$)", text, re.S)
    try: fm = yaml.safe_load(m.group(1)) if m else {}
    except yaml.YAMLError: fm = {}
    return fm if isinstance(fm, dict) else {}


def nbdev_page_name(name: str) -> str:
    "nbdev's rule for a notebook's page (nbdev.doclinks._nbpath2html): lower case, leading `NN_`/`NNx_` dropped."
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", name.lower()).rsplit(".", 1)[0] + ".html"


def output_name(proc: Path, page: Path) -> str:
    "The site path (posix, relative to the site root) that `page` renders to."
    rel = page.relative_to(proc)
    out = front_matter(page).get("output-file") or (nbdev_page_name(rel.name) if page.suffix == ".ipynb"
                                                    else rel.with_suffix(".html").name)
    return (rel.parent / out).as_posix()


def _fence(text: str, info: str = "") -> str:
    n = max([3] + [len(m) + 1 for m in re.findall(r"`{3,}", text)])
    return f"{'`' * n}{info}\n{text.rstrip()}\n{'`' * n}"


def notebook_markdown(page: Path) -> str:
    "A notebook as Quarto reads it: markdown and raw cells as they are, code in a fence, then each cell's outputs."
    nb = json.loads(page.read_text(encoding="utf-8"))
    blocks = []
    for c in nb.get("cells", []):
        s = _src(c)
        if c["cell_type"] in ("markdown", "raw"): blocks.append(s); continue
        code = "\n".join(l for l in s.splitlines() if not re.match(r"^\s*#\|", l)).strip()
        dirs = dict(re.findall(r"^\s*#\|\s*([\w-]+):?\s*(.*)$", s, re.M))
        if code and dirs.get("echo", "").strip().lower() != "false": blocks.append(_fence(code, "python"))
        if dirs.get("output", "").strip().lower() == "false": continue
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream": blocks.append(_fence(_src({"source": o.get("text", "")})))
            elif o.get("output_type") == "error": blocks.append(_fence("\n".join(o.get("traceback", []))))
            else:
                data = o.get("data", {})
                if "text/markdown" in data: blocks.append(_src({"source": data["text/markdown"]}))
                elif "text/html" in data: blocks.append("```{=html}\n" + _src({"source": data["text/html"]}) + "\n```")
                elif any(k.startswith("image/") for k in data): blocks.append("![](data:image)")
                elif "text/plain" in data: blocks.append(_fence(_src({"source": data["text/plain"]})))
    return "\n\n".join(blocks) + "\n"


def page_markdown(page: Path) -> str:
    return notebook_markdown(page) if page.suffix == ".ipynb" else page.read_text(encoding="utf-8")


def pandoc_html(md: str) -> str:
    "`md` rendered to HTML by pandoc (Quarto's own markdown engine; heading ids by the same rule)."
    exe = shutil.which("pandoc")
    if not exe: raise SystemExit("pandoc is not installed: apt-get install pandoc (Debian/Ubuntu) or see pandoc.org")
    r = subprocess.run([exe, "-f", "markdown", "-t", "html5", "--section-divs"], input=md, capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0: raise SystemExit(f"pandoc failed: {r.stderr.strip()[:2000]}")
    return r.stdout


class _Page(HTMLParser):
    "Ids, link targets and the text outside code of one rendered page."
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.hrefs, self.text, self._code = set(), [], [], 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"): self.ids.add(a["id"])
        if tag == "a" and a.get("name"): self.ids.add(a["name"])
        if tag == "a" and a.get("href") is not None: self.hrefs.append(a["href"])
        if tag in ("code", "pre", "script", "style"): self._code += 1
    def handle_endtag(self, tag):
        if tag in ("code", "pre", "script", "style") and self._code: self._code -= 1
    def handle_data(self, data):
        if not self._code: self.text.append(data)


# ---------------------------------------------------------------- step 3: the checks

def check_site(proc: Path, url: str) -> tuple[list[str], dict]:
    "(problems, counts) for the processed folder `proc` of a site published at `url`."
    problems, srcs = [], pages(proc)
    outputs: dict[str, list[str]] = {}
    for p in srcs: outputs.setdefault(output_name(proc, p), []).append(p.relative_to(proc).as_posix())
    for out, who in sorted(outputs.items()):
        if len(who) > 1: problems.append(f"{' and '.join(who)}: both render to {out} (one page per source: rename one)")
    out_of = {p.relative_to(proc).as_posix(): output_name(proc, p) for p in srcs}
    rendered = {}
    for p in srcs:
        parsed = _Page(); parsed.feed(pandoc_html(page_markdown(p))); rendered[p.relative_to(proc).as_posix()] = parsed
    ids = {out_of[k]: v.ids for k, v in rendered.items()}
    n_links = n_internal = 0
    for rel, parsed in rendered.items():
        here = posixpath.dirname(out_of[rel])
        for href in parsed.hrefs:
            n_links += 1
            h = href.strip()
            if h.startswith(url): h = "/" + h[len(url):]                 # the site's own URL: nbdev's API links
            elif _SCHEME.match(h) or h.startswith("//"): continue        # elsewhere on the web
            n_internal += 1
            path, _, frag = h.partition("#")
            path = unquote(path.split("?")[0])
            if not path:                                                  # on this page (pandoc's code-line ids too)
                if frag and unquote(frag) not in parsed.ids: problems.append(f"{rel}: ({href}) no anchor #{frag} on this page")
                continue
            t = posixpath.normpath(path[1:] if path.startswith("/") else posixpath.join(here, path))
            if t.startswith("../") or t == "..":
                problems.append(f"{rel}: ({href}) leaves the site: link the page on GitHub instead"); continue
            if t in out_of: target = out_of[t]                        # a source: Quarto links its page
            elif t in ids: target = t                                  # a rendered page
            elif posixpath.join(t, "index.html") in ids: target = posixpath.join(t, "index.html")
            elif (proc / t).is_file(): continue                       # a resource Quarto copies
            else: problems.append(f"{rel}: ({href}) resolves to no page or file of the site"); continue
            if frag and unquote(frag) not in ids.get(target, set()):
                problems.append(f"{rel}: ({href}) {target} has no anchor #{frag}")
        text = "".join(parsed.text)
        for m in re.finditer(r"\]\(", text):
            problems.append(f"{rel}: literal '](' in the rendered text: ...{text[max(0, m.start() - 60):m.end() + 40]!r}...")
    for p in srcs:
        if p.suffix != ".ipynb": continue
        nb = json.loads(p.read_text(encoding="utf-8"))
        state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        for i, c in enumerate(nb.get("cells", [])):
            for o in c.get("outputs", []):
                mid = o.get("data", {}).get(WIDGET_VIEW, {}).get("model_id")
                if mid is not None and mid not in state:
                    problems.append(f"{p.relative_to(proc)} cell {i}: a widget output without its saved state "
                                    "(blank on a static page): show what it shows as text or html instead")
    return problems, {"pages": len(srcs), "links": n_links, "internal": n_internal}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Render the site with pandoc (no Quarto) and check its pages and links.")
    ap.add_argument("--proc", type=Path, help="check this processed folder instead of running nbdev_proc_nbs")
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository (settings.ini, nbs/)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="site-check-") as tmp:
        proc = args.proc if args.proc else proc_nbs(args.root.resolve(), Path(tmp))
        problems, n = check_site(proc, site_url(args.root))
    print(f"site check: {n['pages']} pages rendered with pandoc, {n['links']} links checked "
          f"({n['internal']} within the site), {len(problems)} problems")
    for p in problems: print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__": sys.exit(main())
