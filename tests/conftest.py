import os, sys
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
