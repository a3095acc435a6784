#!/usr/bin/env bash
# The GPU check: what CI (CPU only) cannot run, in one short offline script on a machine with an NVIDIA GPU.
#
#   bash tools/gpu_check.sh                 # on the GPU machine (about 5 minutes on one GPU; no network needed)
#   bash tools/gpu_check.sh --cpu           # dry run on a CPU: the same steps, a tiny model, a few steps (CI runs it)
#   bash tools/gpu_check.sh --out FILE      # where the JSON goes (default: benchmarks/results/gpu_check-<date>-<gpu>.json)
#
# Steps: the hardware as distrinews sees it; a random-initialised DistilBERT (built from its config, no download) trained
# on synthetic news in fp16 and in bf16 for a few hundred steps, with MFU against the vendor's peak; the batch probe;
# `distrinews doctor --json`; `distrinews serve --dtype auto` on the GPU under a short load. Everything lands in one JSON.
# Needs distrinews installed (with fastapi, uvicorn, httpx, datasets) and the `distrinews` command on PATH.
set -euo pipefail
PY=${PYTHON:-$(command -v python3)}
[ -n "${VIRTUAL_ENV:-}" ] && PY="$VIRTUAL_ENV/bin/python"
command -v distrinews >/dev/null && PY=$(dirname "$(command -v distrinews)")/python
exec "$PY" - "$@" <<'PY'
import argparse, asyncio, json, os, socket, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ap = argparse.ArgumentParser(prog="tools/gpu_check.sh")
ap.add_argument("--cpu", action="store_true", help="dry run on the CPU: tiny model, a few steps")
ap.add_argument("--out", help="the JSON file to write")
ap.add_argument("--steps", type=int, default=None, help="training steps per precision (default 300 on a GPU, 6 on --cpu)")
args = ap.parse_args(sys.argv[1:])
os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1")
t_start = time.time()

import torch
from distrinews.bench import hardware_label, mfu, vendor_peak_flops
from distrinews.cli import doctor_hardware
from distrinews.ddp import describe_hardware
gpu = not args.cpu
if gpu and not torch.cuda.device_count(): sys.exit("gpu_check: no GPU here; run with --cpu for the dry run")
work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
report = dict(check="gpu_check", cpu_dry_run=args.cpu, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
              hardware=describe_hardware(), hardware_label=hardware_label(), doctor_hardware=doctor_hardware(),
              torch=torch.__version__, cuda=torch.version.cuda)
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
    r = sh("distrinews", "train", "--model", str(model_dir), "--data", f"synthetic:{steps * batch + 200}", "--max-steps", str(steps),
           "--batch-size", str(batch), "--max-length", str(length), "--precision", precision, "--nproc", "1",
           "--eval-every", "0", "--output", str(out), "--overwrite")
    s = json.loads((out/"summary.json").read_text())
    m = mfu(s, s["hardware"], 1)
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
from distrinews.loop import _probe, fit_batch_size
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
r = sh("distrinews", "doctor", "--json", timeout=300)
text = r.stdout
try: report["doctor"] = json.loads(text)
except json.JSONDecodeError: report["doctor"] = json.loads(text[text.index("\n{") + 1:] if not text.startswith("{") else text)
print("doctor:", ", ".join(f"{c['name']} {'PASS' if c['ok'] else 'FAIL'}" for c in report["doctor"].get("checks", [])), flush=True)

# 5. serving with --dtype auto on the GPU, under a short load
import httpx
with socket.socket() as s_: s_.bind(("127.0.0.1", 0)); port = s_.getsockname()[1]
server = subprocess.Popen(["distrinews", "serve", "--checkpoint", str(work/"train-fp16"/"best"), "--dtype", "auto", "--port", str(port)],
                          cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
url = f"http://127.0.0.1:{port}"
try:
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200: break
        except httpx.TransportError: time.sleep(0.2)
    else: sys.exit("gpu_check: the server never became healthy")
    info = httpx.get(url + "/info").json()
    from distrinews.data import synthetic_news
    texts = list(synthetic_news(256, seed=3)["text"])
    n_req, clients = (2000, 32) if gpu else (60, 4)
    from distrinews.servebench import _pct, drive     # the serving benchmark's closed-loop clients and quantiles
    m = asyncio.run(drive(url, texts, clients, n_req))
    lat, errors, wall = m["latencies"], m["errors"], m["wall_s"]
    report["serve"] = dict(dtype_asked="auto", dtype=info.get("dtype"), device=info.get("device"), clients=clients, requests=n_req,
                           rps=len(lat) / wall, p50_ms=1000 * _pct(lat, 0.5), p99_ms=1000 * _pct(lat, 0.99), errors=errors)
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
    "served without errors": report["serve"]["errors"] == 0,
    "serve auto dtype": report["serve"]["dtype"] == (("bf16" if want_bf16 else "fp16") if gpu else report["serve"]["dtype"]),
    "vendor peak known": (vendor_peak_flops(report["hardware"], 1) is not None) if gpu else True,
}
report["seconds"] = round(time.time() - t_start, 1)
gpu_name = report["hardware"]["name"].replace(" ", "_") if gpu else "cpu-dry-run"
out = Path(args.out) if args.out else Path("benchmarks/results")/f"gpu_check-{datetime.now(timezone.utc):%Y%m%d-%H%M}-{gpu_name}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(report, indent=1, default=str) + "\n")
bad = [k for k, ok in report["checks"].items() if not ok]
print(f"gpu_check: {'FAIL: ' + ', '.join(bad) if bad else 'all checks passed'} in {report['seconds']:.0f} s; wrote {out}")
sys.exit(1 if bad else 0)
PY
