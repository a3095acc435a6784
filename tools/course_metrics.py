"""The course's shape, measured: lines and top-level definitions per package module, and the share of export cells
that the next code cell shows running (a code cell that is not exported, not hidden, and has an output).

    python tools/course_metrics.py            # table on stdout
"""
import ast, json, sys
from pathlib import Path

from run_notebooks import directives   # the `#| key: value` lines at the top of a cell, as nbdev reads them

ROOT = Path(__file__).resolve().parents[1]

def shown(nb: dict) -> tuple[int, int]:
    "(export cells, export cells whose next code cell runs something with an output)."
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    n = ok = 0
    for i, c in enumerate(code):
        if "export" not in directives("".join(c["source"])): continue
        n += 1
        nxt = code[i + 1] if i + 1 < len(code) else None
        if nxt is None: continue
        d = directives("".join(nxt["source"]))
        if not ({"export", "exports", "hide", "default_exp"} & d.keys()) and nxt.get("outputs"): ok += 1
    return n, ok

def main() -> int:
    print("| module | lines | top-level definitions |\n|---|---|---|")
    for p in sorted((ROOT/"distrinews").glob("*.py")):
        if p.name in ("__init__.py", "_modidx.py"): continue
        tree = ast.parse(p.read_text())
        defs = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)
        print(f"| {p.stem} | {len(p.read_text().splitlines())} | {defs} |")
    tot_n = tot_ok = 0
    print("\n| chapter | export cells | followed by a shown run |\n|---|---|---|")
    for p in sorted((ROOT/"nbs").glob("[0-9]*.ipynb")):
        n, ok = shown(json.loads(p.read_text()))
        tot_n, tot_ok = tot_n + n, tot_ok + ok
        print(f"| {p.stem} | {n} | {ok} |")
    print(f"| all | {tot_n} | {tot_ok} ({100 * tot_ok / max(tot_n, 1):.0f} %) |")
    return 0

if __name__ == "__main__": sys.exit(main())
