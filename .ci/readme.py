#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb without Quarto (nbdev_readme needs it; this machine and CI have none).

    python .ci/readme.py          # rewrite README.md
    python .ci/readme.py --check  # exit 1, saying so, when README.md differs from what index.ipynb makes

What it does, cell by cell:
* markdown cells are copied as they are, except that relative links are made absolute, because README.md is
  also the package's long description on PyPI, where a relative link resolves nowhere: `04_trainer.ipynb` ->
  `<git_url>/blob/<branch>/nbs/04_trainer.ipynb` (GitHub renders notebooks), and `kaggle_colab.qmd` -> the
  page on the published site (GitHub shows a .qmd as plain text);
* code cells are skipped when nbdev hides them in the docs (`#| hide`, `#| include: false`, `#| export`,
  `#| exporti`) or hold only directives (`#| default_exp ...`); otherwise the code (directives removed)
  goes in a ```python fence, unless `#| echo: false`, followed by its text outputs in a plain fence,
  unless `#| output: false`.
Links inside code spans and fenced code blocks are left alone.
"""
from __future__ import annotations
import argparse, configparser, difflib, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+):?\s*(.*?)\s*$")
_HIDDEN = {"hide", "export", "exporti"}
# [text](target) / ![alt](target); target without spaces, optional "title"
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODESPAN = re.compile(r"(`+)(.+?)\1")


def settings() -> configparser.SectionProxy:
    cp = configparser.ConfigParser(delimiters=["="])
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    return cp["DEFAULT"]


def _src(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def directives(source: str) -> dict[str, str]:
    "The `#| key: value` directives at the top of a code cell."
    out = {}
    for line in source.splitlines():
        if not line.strip(): continue
        m = _DIRECTIVE.match(line)
        if not m: break
        out[m.group(1)] = m.group(2)
    return out


def _strip_directives(source: str) -> str:
    lines = source.splitlines()
    while lines and (not lines[0].strip() or _DIRECTIVE.match(lines[0])): lines.pop(0)
    return "\n".join(lines).strip("\n")


def _rewrite_target(target: str, nbs: Path, site: str, blob: str) -> str:
    if re.match(r"^[a-zA-Z][\w+.-]*:", target) or target.startswith(("#", "/")): return target
    path, sep, frag = target.partition("#")
    if not path: return target
    p = Path(path)
    if p.suffix == ".qmd" and (nbs / p).is_file():
        return f"{site}/{p.with_suffix('.html').as_posix()}" + (sep + frag if sep else "")
    if p.suffix == ".ipynb" or (nbs / p).exists():
        return f"{blob}/{nbs.name}/{p.as_posix()}" + (sep + frag if sep else "")
    return target


def rewrite_links(md: str, nbs: Path, site: str, blob: str) -> str:
    "Make the relative links of `md` (a page in `nbs`) absolute (`blob`: the repository's files on GitHub); code is left alone."
    out, fenced = [], None
    for line in md.split("\n"):
        m = _FENCE.match(line)
        if fenced is not None:
            if m and m.group(1) == fenced: fenced = None
            out.append(line); continue
        if m: fenced = m.group(1); out.append(line); continue
        parts, last = [], 0   # rewrite outside code spans only
        for cs in _CODESPAN.finditer(line):
            parts.append(_LINK.sub(lambda x: x.group(1) + _rewrite_target(x.group(2), nbs, site, blob) + x.group(3),
                                   line[last:cs.start()]))
            parts.append(cs.group(0)); last = cs.end()
        parts.append(_LINK.sub(lambda x: x.group(1) + _rewrite_target(x.group(2), nbs, site, blob) + x.group(3), line[last:]))
        out.append("".join(parts))
    return "\n".join(out)


def _outputs(cell: dict) -> str:
    texts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream": t = o.get("text", "")
        elif o.get("output_type") in ("execute_result", "display_data"): t = o.get("data", {}).get("text/plain", "")
        else: continue
        t = "".join(t) if isinstance(t, list) else t
        if t.strip(): texts.append(t.rstrip("\n"))
    return "```\n" + "\n".join(texts) + "\n```" if texts else ""


def make_readme(root: Path = ROOT) -> str:
    "The README text that the readme notebook (settings.ini `readme_nb`) makes."
    cfg = settings()
    nbs = root / cfg.get("nbs_path", "nbs")
    nb = json.loads((nbs / cfg.get("readme_nb", "index.ipynb")).read_text(encoding="utf-8"))
    site = cfg.get("doc_host", "").rstrip("/") + cfg.get("doc_baseurl", "")
    blob = f"{cfg['git_url'].rstrip('/')}/blob/{cfg.get('branch', 'main')}"
    blocks = []
    for cell in nb["cells"]:
        src = _src(cell)
        if cell["cell_type"] == "markdown":
            if src.strip(): blocks.append(rewrite_links(src.strip("\n"), nbs, site, blob))
            continue
        if cell["cell_type"] != "code": continue
        d = directives(src)
        if _HIDDEN & d.keys() or d.get("include", "").lower() == "false": continue
        code = _strip_directives(src)
        if not code.strip(): continue   # directives only, e.g. `#| default_exp`
        if d.get("echo", "").lower() != "false": blocks.append("```python\n" + code + "\n```")
        if d.get("output", "").lower() != "false" and (out := _outputs(cell)): blocks.append(out)
    return "\n\n".join(blocks) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write README.md from the readme notebook (nbs/index.ipynb).")
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if README.md is out of date")
    args = ap.parse_args(argv)
    want, readme = make_readme(), ROOT / "README.md"
    have = readme.read_text(encoding="utf-8") if readme.exists() else ""
    if args.check:
        if have == want: return 0
        diff = "".join(list(difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                                 "README.md", "README.md from nbs/index.ipynb"))[:60])
        print(f"README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py` and commit README.md.\n{diff}",
              file=sys.stderr)
        return 1
    if have != want: readme.write_text(want, encoding="utf-8"); print("wrote README.md")
    else: print("README.md is up to date")
    return 0


if __name__ == "__main__": sys.exit(main())
