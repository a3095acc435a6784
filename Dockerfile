# A Hugging Face Docker Space (CPU) that serves a distrinews model pushed to the Hub: see nbs/publish.qmd.
# The Space repository holds this file, the package sources (settings.ini setup.py pyproject.toml MANIFEST.in
# LICENSE distrinews/) and space/README.md as its README.md; the Space variable MODEL_ID (USER/NAME of the model,
# pushed with `distrinews push`) reaches the build as a build argument. Locally:
#   docker build --build-arg MODEL_ID=USER/NAME -t distrinews . && docker run -p 7860:7860 distrinews
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_TELEMETRY=1 \
    HOME=/home/user PATH=/home/user/.local/bin:$PATH
# Spaces run the container as user 1000
RUN useradd -m -u 1000 user
WORKDIR /home/user/app

# the CPU build of torch (the default build carries CUDA libraries a CPU Space does not use), then distrinews
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --chown=user settings.ini setup.py pyproject.toml README.md MANIFEST.in LICENSE ./
COPY --chown=user distrinews ./distrinews
RUN pip install .

# the model, downloaded once at build time (a private model needs the Space secret HF_TOKEN)
USER user
ARG MODEL_ID
RUN --mount=type=secret,id=HF_TOKEN,mode=0444,required=false \
    test -n "$MODEL_ID" || { echo "set the Space variable MODEL_ID to USER/NAME of a model pushed with distrinews push"; exit 1; } && \
    HF_TOKEN="$(cat /run/secrets/HF_TOKEN 2>/dev/null)" python -c "import os; from huggingface_hub import snapshot_download; \
snapshot_download(os.environ['MODEL_ID'], local_dir='checkpoint', token=os.environ.get('HF_TOKEN') or None)"
ENV HF_HUB_OFFLINE=1

EXPOSE 7860
# one process, as many torch threads as the container's CPU quota allows (2 on a free Space), fp32 (exact: a text
# gets the same answer alone and in a batch). Add "--int8" for more throughput at a small accuracy cost (06_api).
CMD ["distrinews", "serve", "--checkpoint", "/home/user/app/checkpoint", "--host", "0.0.0.0", "--port", "7860", "--dtype", "fp32"]
