# A Hugging Face Docker Space (CPU) that serves a distrinews checkpoint: see nbs/06_api.ipynb.
# Put the trainer's OUT/best/ folder next to this file as checkpoint/ (config.json, model.safetensors, tokenizer
# files; track model.safetensors with Git LFS), then push. Locally:
#   docker build -t distrinews . && docker run -p 7860:7860 distrinews
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 \
    HOME=/home/user PATH=/home/user/.local/bin:$PATH
# Spaces run the container as user 1000
RUN useradd -m -u 1000 user
WORKDIR /home/user/app

# the CPU build of torch (the default build carries CUDA libraries a CPU Space does not use), then distrinews
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --chown=user settings.ini setup.py pyproject.toml README.md MANIFEST.in ./
COPY --chown=user distrinews ./distrinews
RUN pip install .
COPY --chown=user checkpoint ./checkpoint

USER user
EXPOSE 7860
# one process, as many torch threads as the container's CPU quota allows (2 on a free Space), fp32 (exact: a text
# gets the same answer alone and in a batch). Add "--int8" for more throughput at a small accuracy cost (06_api).
CMD ["distrinews", "serve", "--checkpoint", "/home/user/app/checkpoint", "--host", "0.0.0.0", "--port", "7860"]
