#!/usr/bin/env bash
# The user's journey from the built wheel, not the checkout: run with the Python of a fresh environment where the wheel
# is installed (not editable), from a folder outside the repository. Every command a user meets first: demo, train,
# eval, predict, serve (the page, /health, /predict), push without a token, doctor. Then the wheel's file list against
# what the code opens with importlib.resources.
#
#   bash tools/wheel_journey.sh PYTHON WHEEL
set -euo pipefail
PY=$1; WHEEL=$(realpath "$2")
BIN=$(dirname "$PY")
export PATH="$BIN:$PATH" HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN
work=$(mktemp -d); export HF_HOME="$work/hf-home"   # no cached token either
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
say() { echo "-- $*"; }
fail() { echo "wheel journey: FAIL: $*" >&2; exit 1; }

say "installed from the wheel, outside the repository"
where=$("$PY" -c "import distrinews, os; print(os.path.dirname(distrinews.__file__))")
case "$where" in */site-packages/distrinews) ;; *) fail "distrinews imports from $where, not from site-packages";; esac
[ -x "$BIN/distrinews" ] || fail "no distrinews command in $BIN"

say "the wheel's requirements bring what the chapters and the hardware report import (fastcore, pynvml)"
"$PY" -c "import fastcore.test, pynvml" || fail "installing the wheel did not bring fastcore and pynvml (nvidia-ml-py)"
"$PY" - <<'PY' || fail "the declared requirements miss a floor the code needs"
from importlib.metadata import requires
reqs = {r.split(";")[0].replace(" ", "") for r in requires("distrinews")}
need = {"torch>=2.6", "transformers>=5.0.0"}     # fully_shard (FSDP2); transformers: the floor tools/floors.txt tests
assert need <= reqs, f"requirements {sorted(reqs)} lack {sorted(need - reqs)}"
PY

say "the wheel holds every file the code opens with importlib.resources"
"$PY" - "$WHEEL" "$where" <<'PY'
import re, sys, zipfile
from pathlib import Path
wheel, pkg = sys.argv[1], Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
opened = {m for f in pkg.glob("*.py") for m in re.findall(r'files\("distrinews"\)\.joinpath\("([^"]+)"\)', f.read_text())}
if not opened: sys.exit("found no importlib.resources use in the package: the check would check nothing")
missing = sorted(o for o in opened if f"distrinews/{o}" not in names)
if missing: sys.exit(f"the wheel lacks {missing}, which the code opens")
print(f"   {len(opened)} resource(s) opened, all in the wheel: {sorted(opened)}")
PY

say "distrinews demo"
distrinews demo --output runs/demo --samples 400 > demo.log 2>&1 || { cat demo.log; fail "demo"; }
tail -2 demo.log

say "distrinews train (tiny, 1 process)"
distrinews train --config quick --data synthetic:300 --epochs 1 --nproc 1 --output runs/t > train.log 2>&1 || { cat train.log; fail "train"; }
tail -1 train.log
[ -f runs/t/best/model.safetensors ] || fail "train wrote no runs/t/best/model.safetensors"

say "distrinews eval"
distrinews eval --checkpoint runs/t/best --data synthetic:100 > eval.log 2>&1 || { cat eval.log; fail "eval"; }
tail -1 eval.log

say "distrinews predict"
distrinews predict --checkpoint runs/t/best --json "Stocks rallied as oil prices fell" > predict.json || fail "predict"
"$PY" -c "import json; p = json.load(open('predict.json')); assert p[0]['label'] in ('World', 'Sports', 'Business', 'Sci/Tech'), p; print('  ', p[0]['label'], round(p[0]['confidence'], 3))"

say "distrinews serve: the page, /health, /predict"
port=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
distrinews serve --checkpoint runs/t/best --port "$port" > serve.log 2>&1 &
"$PY" - "$port" <<'PY' || { cat serve.log; fail "serve"; }
import sys, time, httpx
url = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        if httpx.get(url + "/health", timeout=1).status_code == 200: break
    except httpx.TransportError: time.sleep(0.2)
else: sys.exit("the server never answered /health")
page = httpx.get(url + "/")
assert page.status_code == 200 and "<html" in page.text.lower() and "text/html" in page.headers["content-type"], page.text[:300]
r = httpx.post(url + "/predict", json={"text": "The team won the cup final"})
assert r.status_code == 200 and r.json()["label"] in ("World", "Sports", "Business", "Sci/Tech"), r.text
bad = httpx.post(url + "/predict", json={"text": ""})
assert bad.status_code == 422 and "text" in bad.text, bad.text
print(f"   GET / {page.status_code} ({len(page.text)} chars), POST /predict {r.json()['label']}, empty text {bad.status_code}")
PY
kill %1 2>/dev/null || true

say "distrinews push refuses without a token"
set +e; distrinews push --checkpoint runs/t/best --repo-id someone/distrinews-test > push.log 2>&1; rc=$?; set -e
[ "$rc" = 2 ] || { cat push.log; fail "push exited $rc, expected 2"; }
grep -qi "token" push.log || { cat push.log; fail "push's message does not say what is missing (a token)"; }
grep -q "Traceback" push.log && { cat push.log; fail "push printed a traceback"; }
head -1 push.log

say "distrinews doctor"
distrinews doctor > doctor.log 2>&1 || { cat doctor.log; fail "doctor"; }
grep -c PASS doctor.log | xargs -I{} echo "   {} checks PASS"
grep -q FAIL doctor.log && { cat doctor.log; fail "doctor reported a FAIL"; }
echo "wheel journey: ok"
