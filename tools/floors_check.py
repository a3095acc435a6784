#!/usr/bin/env python3
"""The dependency floors have one home: tools/floors.txt pins, `name==version`, every minimum that settings.ini's
`requirements` declare (`name>=version`), with the reason for each raised floor beside it.

    python tools/floors_check.py                          # exit 1 unless tools/floors.txt and settings.ini agree
    python tools/floors_check.py --installed --skip torch # ... and this environment has exactly those versions
"""
from __future__ import annotations
import argparse, configparser, re, shlex, sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ROOT / "tools" / "floors.txt"


def _norm(name: str) -> str: return re.sub(r"[-_.]+", "-", name).lower()


def settings_floors(root: Path = ROOT) -> dict[str, str]:
    "{package: minimum} of every `name>=version` in settings.ini's requirements."
    cp = configparser.ConfigParser(delimiters=["="])
    cp.read(root / "settings.ini", encoding="utf-8")
    out = {}
    for req in shlex.split(cp["DEFAULT"].get("requirements", "")):
        m = re.match(r"^([A-Za-z0-9_.-]+).*?>=\s*([0-9][^,;\s]*)", req)
        if m: out[_norm(m.group(1))] = m.group(2)
    return out


def file_floors(path: Path = FLOORS) -> dict[str, str]:
    "{package: version} of the `name==version` lines of a constraints file (comments after #)."
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line: continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*==\s*(\S+)", line)
        if not m: raise SystemExit(f"{path.name}: not `name==version`: {line!r}")
        out[_norm(m.group(1))] = m.group(2)
    return out


def problems(root: Path = ROOT, installed: bool = False, skip: tuple[str, ...] = ()) -> list[str]:
    want, have = settings_floors(root), file_floors(root / "tools" / "floors.txt")
    out = [f"{n}: settings.ini says >={v}, tools/floors.txt says {have.get(n, 'nothing')}" for n, v in want.items() if have.get(n) != v]
    out += [f"{n}: tools/floors.txt pins {v}, settings.ini declares no such floor" for n, v in have.items() if n not in want]
    if installed:
        for n, v in have.items():
            if n in map(_norm, skip): continue
            try: got = version(n)
            except PackageNotFoundError: got = "not installed"
            if got != v and got.split("+")[0] not in (v, v + ".0"): out.append(f"{n}: floor {v}, installed {got}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check that tools/floors.txt and settings.ini declare the same floors.")
    ap.add_argument("--installed", action="store_true", help="also check the installed versions equal the floors")
    ap.add_argument("--skip", nargs="*", default=[], help="packages not checked with --installed (e.g. torch)")
    args = ap.parse_args(argv)
    bad = problems(installed=args.installed, skip=tuple(args.skip))
    for b in bad: print(b)
    print(f"floors: {len(settings_floors())} declared, {len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__": sys.exit(main())
