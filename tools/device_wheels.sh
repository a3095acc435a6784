#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, for tools/gpu_check.sh --wheels DIR: that machine (one H100, Python 3.12,
# torch 2.11, transformers 5.17, accelerate 1.15, no network) has torch, transformers, accelerate, httpx, pandas, pyarrow,
# tqdm, pyyaml, matplotlib, safetensors, huggingface-hub, anyio, click, h11, xxhash, fsspec, annotated-doc and
# nvidia-ml-py, but not datasets, fastapi, uvicorn, pydantic or starlette (nor their own needs below, such as
# opentelemetry-api, which fastapi imports: CI's device-like step found it).
#
#   bash tools/device_wheels.sh DIR                   # Python 3.12, manylinux x86-64: the lent machine
#   bash tools/device_wheels.sh DIR --python 3.11     # another Python (CI runs the same check on its own Python)
#
# Only binary wheels, no dependencies resolved (`--no-deps`: each one is named here, pinned, so pydantic and
# pydantic-core agree); at most 64 MiB in all (what one device call may carry).
set -euo pipefail
usage() { echo "usage: tools/device_wheels.sh DIR [--python X.Y]" >&2; exit 2; }
[ $# -ge 1 ] || usage
DIR=$1; shift
PYV=3.12
while [ $# -gt 0 ]; do
  case $1 in
    --python) [ $# -ge 2 ] || usage; PYV=$2; shift 2;;
    *) usage;;
  esac
done
WHEELS=(
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19                       # datasets (the rest of its needs are there)
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0                      # the service
  opentelemetry-api==1.45.3                                               # fastapi imports it (fastapi.telemetry)
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
)
mkdir -p "$DIR"
PY=${PYTHON:-python3}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${platforms[@]}" \
  -d "$DIR" "${WHEELS[@]}"
n=$(ls "$DIR"/*.whl | wc -l)
[ "$n" -eq "${#WHEELS[@]}" ] || { echo "device_wheels: expected ${#WHEELS[@]} wheels in $DIR, found $n (an old download left there?)" >&2; exit 1; }
bytes=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
[ "$bytes" -le $((64 * 1024 * 1024)) ] || { echo "device_wheels: $((bytes / 1048576)) MiB of wheels, over the 64 MiB a device call carries" >&2; exit 1; }
echo "device_wheels: $n wheels for Python $PYV, $((bytes / 1024)) KiB, in $DIR"
