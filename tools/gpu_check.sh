#!/usr/bin/env bash
# The GPU check: what CI (CPU only) cannot run, in one short offline script on a machine with an NVIDIA GPU, from the
# checkout (no install of distrinews, no `distrinews` command needed: `python -m distrinews.cli`).
#
#   bash tools/device_wheels.sh .whl                                       # here: the wheels that machine lacks (4 MiB)
#   bash tools/gpu_check.sh --wheels .whl --out "$OUT/gpu_check.json"      # there (about 4 minutes on one H100)
#   bash tools/gpu_check.sh --cpu --out FILE                               # dry run on a CPU: a tiny model, a few steps
#
# --wheels DIR installs DIR/*.whl with `pip install --no-index --no-deps --target` into a temporary folder put on
# PYTHONPATH (the lent machine has no network, and no datasets, fastapi, uvicorn, pydantic or starlette).
# Steps: the hardware as distrinews sees it; a random-initialised DistilBERT (built from its config, no download) trained
# on synthetic news in fp16 and in bf16, with MFU against the vendor's peak in that precision; the batch probe;
# `doctor --json`; `serve --dtype auto` on the GPU (its output to a file, the process polled), warmed up, then >= 1,000
# requests. Everything lands in one JSON, FILE.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}                        # the lent machine: python3 is the one that holds torch
args=(); WHEELS=""
while [ $# -gt 0 ]; do
  case $1 in
    --wheels) [ $# -ge 2 ] || { echo "gpu_check: --wheels needs a folder" >&2; exit 2; }; WHEELS=$2; shift 2;;
    *) args+=("$1"); shift;;
  esac
done
SITE=""
if [ -n "$WHEELS" ]; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu_check: no wheels in $WHEELS (make them with tools/device_wheels.sh)" >&2; exit 2; }
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check-site-XXXXXX")
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
fi
# the checkout's distrinews first, then the wheels, then what the machine has (inherited by every child process)
export PYTHONPATH="$ROOT${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" - "${args[@]}" <<'PY'
import argparse, asyncio, json, os, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ap = argparse.ArgumentParser(prog="tools/gpu_check.sh")
ap.add_argument("--cpu", action="store_true", help="dry run on the CPU: tiny model, a few steps")
ap.add_argument("--out", required=True, help="the JSON file to write (on the lent machine: under $OUT)")
ap.add_argument("--steps", type=int, default=None, help="training steps per precision (default 300 on a GPU, 6 on --cpu)")
args = ap.parse_args(sys.argv[1:])
os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1")
t_start = time.time()

import torch
from distrinews.bench import hardware_label, mfu, vendor_peak_flops
from distrinews.cli import doctor_hardware
from distrinews.ddp import describe_hardware, free_port
gpu = not args.cpu
if gpu and not torch.cuda.device_count(): sys.exit("gpu_check: no GPU here; run with --cpu for the dry run")
import distrinews
work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
out_file = Path(args.out).resolve()
DN = [sys.executable, "-m", "distrinews.cli"]        # the checkout's code (PYTHONPATH), no `distrinews` command needed
report = dict(check="gpu_check", cpu_dry_run=args.cpu, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
              hardware=describe_hardware(), hardware_label=hardware_label(), doctor_hardware=doctor_hardware(),
              torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0],
              distrinews_from=str(Path(distrinews.__file__).parent))
print(f"gpu_check on {report['hardware_label']} ({'CPU dry run' if args.cpu else 'GPU'})", flush=True)

def sh(*cmd, timeout=600, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work, **kw)
    if r.returncode: sys.exit(f"gpu_check: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r

# 1. a random-initialised DistilBERT from its config (the real architecture on a GPU, the tiny one on --cpu)
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from distrinews.data import tiny_tokenizer
from distrinews.model import ID2LABEL, LABEL2ID, save_model, tiny_config
tok = tiny_tokenizer()
conf = (DistilBertConfig(vocab_size=len(tok), num_labels=4, id2label=ID2LABEL, label2id=LABEL2ID) if gpu
        else tiny_config(len(tok)))
torch.manual_seed(0)
model_dir = save_model(DistilBertForSequenceClassification(conf), tok, work/"distilbert-random")
report["model"] = dict(kind="DistilBERT, random init" if gpu else "tiny DistilBERT, random init", layers=conf.n_layers,
                       dim=conf.dim, params=sum(p.numel() for p in DistilBertForSequenceClassification(conf).parameters()))

# 2. fp16 and bf16 training, MFU against the vendor's peak
steps = args.steps or (300 if gpu else 6)
batch, length = (64, 128) if gpu else (8, 32)
report["train"] = {}
for precision in ("fp16", "bf16"):
    out = work/f"train-{precision}"
    r = sh(*DN, "train", "--model", str(model_dir), "--data", f"synthetic:{steps * batch + 200}", "--max-steps", str(steps),
           "--batch-size", str(batch), "--max-length", str(length), "--precision", precision, "--nproc", "1",
           "--eval-every", "0", "--output", str(out), "--overwrite")
    s = json.loads((out/"summary.json").read_text())
    m = mfu(s, s["hardware"], 1)                     # against the vendor's peak in this precision (s["precision"])
    report["train"][precision] = dict(steps=s["global_step"], samples_per_s=s["train_samples_per_s"], tokens_per_s=s["train_tokens_per_s"],
                                      precision=s["precision"], per_device_batch=s["per_device_batch"], peak_mem_mb=s["peak_mem_mb"],
                                      skipped_steps=s["skipped_steps"], eval_accuracy=s["eval"]["accuracy"], **m,
                                      first_log_line=r.stdout.splitlines()[0] if r.stdout else "")
    vendor = "unknown" if m["mfu_vendor"] is None else f"{100 * m['mfu_vendor']:.1f} %"
    print(f"train {precision}: {s['global_step']} steps, {s['train_samples_per_s']:.0f} samples/s, MFU vs vendor peak {vendor}, "
          f"vs the run's measured peak {100 * m['mfu']:.1f} %", flush=True)

# 3. the batch probe: a batch that cannot fit is halved until it does (on a GPU; on a CPU the probe itself runs once)
from distrinews.config import load_config
from distrinews.ddp import setup_distributed
from distrinews.model import load_model
from distrinews.run import _probe, fit_batch_size
env = setup_distributed()
model = load_model(str(model_dir))[0].to(env.device)
model.eval()                                        # as from_pretrained returns it: the probe must switch to train mode
ask, probe_len = (8192, 512) if gpu else (4, 32)
cfg = load_config("quick", batch_size=ask, max_length=probe_len)
t = time.time()
if gpu: bs, accum = fit_batch_size(model, cfg, env, probe_len, "fp16")
else: bs, accum = (ask, 1) if _probe(model, ask, probe_len, env, "fp32") else (None, None)
report["batch_probe"] = dict(asked=ask, max_len=probe_len, per_device_batch=bs, grad_accum=accum, seconds=round(time.time() - t, 1),
                             model_training_after=model.training)
print(f"batch probe: asked {ask} x {probe_len} tokens, got {bs} x grad_accum {accum}", flush=True)
del model
if gpu: torch.cuda.empty_cache()

# 4. the doctor
r = sh(*DN, "doctor", "--json", timeout=300)
text = r.stdout
try: report["doctor"] = json.loads(text)
except json.JSONDecodeError: report["doctor"] = json.loads(text[text.index("\n{") + 1:] if not text.startswith("{") else text)
print("doctor:", ", ".join(f"{c['name']} {'PASS' if c['ok'] else 'FAIL'}" for c in report["doctor"].get("checks", [])), flush=True)

# 5. serving with --dtype auto on the GPU, under a short load
import httpx
port = free_port()
serve_log = work/"serve.log"                       # a file, not a pipe: nobody reads a pipe, and a full one stalls the server
with open(serve_log, "w") as log:
    server = subprocess.Popen([*DN, "serve", "--checkpoint", str(work/"train-fp16"/"best"), "--dtype", "auto", "--port", str(port)],
                              cwd=work, stdout=log, stderr=subprocess.STDOUT)
url = f"http://127.0.0.1:{port}"
def server_failed(why: str):
    tail = serve_log.read_text()[-3000:] if serve_log.exists() else ""
    sys.exit(f"gpu_check: {why}; the server's output ends with:\n{tail}")
try:
    t_up = time.time()
    while True:                                         # the process polled: a server that died is reported at once
        if server.poll() is not None: server_failed(f"the server exited ({server.returncode}) before it was healthy")
        if time.time() - t_up > 180: server_failed("the server was not healthy after 180 s")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200: break
        except httpx.TransportError: pass
        time.sleep(0.2)
    ready_s = time.time() - t_up
    info = httpx.get(url + "/info").json()
    from distrinews.data import synthetic_news
    texts = list(synthetic_news(256, seed=3)["text"])
    n_req, clients = (2000, 32) if gpu else (1000, 4)
    from distrinews.servebench import _pct, drive     # the serving benchmark's closed-loop clients and quantiles
    warm = asyncio.run(drive(url, texts, clients, 4 * clients, max_seconds=120))   # warm-up: kernels, batch shapes, clocks
    m = asyncio.run(drive(url, texts, clients, n_req, max_seconds=240))
    if server.poll() is not None: server_failed(f"the server exited ({server.returncode}) under load")
    lat, errors, wall = m["latencies"], m["errors"], m["wall_s"]
    report["serve"] = dict(dtype_asked="auto", dtype=info.get("dtype"), device=info.get("device"), clients=clients, requests=n_req,
                           answered=len(lat), rps=len(lat) / wall, p50_ms=1000 * _pct(lat, 0.5), p99_ms=1000 * _pct(lat, 0.99),
                           errors=errors, warmup_requests=len(warm["latencies"]), warmup_errors=warm["errors"],
                           ready_s=round(ready_s, 1), log_bytes=serve_log.stat().st_size)
    print(f"serve (auto -> {info.get('dtype')} on {info.get('device')}): {len(lat) / wall:.0f} req/s at {clients} clients, "
          f"p50 {report['serve']['p50_ms']:.1f} ms, errors {errors}", flush=True)
finally:
    server.terminate()
    try: server.wait(15)
    except subprocess.TimeoutExpired: server.kill()

# the verdicts: what must hold wherever this runs
want_bf16 = gpu and torch.cuda.get_device_capability(0) >= (8, 0)
report["checks"] = {
    "both precisions trained": all(report["train"][p]["steps"] == steps for p in ("fp16", "bf16")),
    "fp16 and bf16 ran as asked": [report["train"][p]["precision"] for p in ("fp16", "bf16")] == ["fp16", "bf16"],
    "probe found a batch": report["batch_probe"]["per_device_batch"] is not None,
    "doctor passed": all(c["ok"] for c in report["doctor"].get("checks", [])),
    "served without errors": report["serve"]["errors"] == 0 and report["serve"]["answered"] >= 1000,
    "serve auto dtype": report["serve"]["dtype"] == (("bf16" if want_bf16 else "fp16") if gpu else report["serve"]["dtype"]),
    "vendor peak known": all(vendor_peak_flops(report["hardware"], 1, p) is not None for p in ("fp16", "bf16")) if gpu else True,
}
report["seconds"] = round(time.time() - t_start, 1)
out = out_file
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(report, indent=1, default=str) + "\n")
bad = [k for k, ok in report["checks"].items() if not ok]
print(f"gpu_check: {'FAIL: ' + ', '.join(bad) if bad else 'all checks passed'} in {report['seconds']:.0f} s; wrote {out}")
sys.exit(1 if bad else 0)
PY
