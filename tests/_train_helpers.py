"Functions the multi-process tests launch (they must live in an importable module for spawned processes)."
import hashlib, json
from distrinews.loop import Callback
from distrinews.train import train


class ParamHash(Callback):
    "After training, each rank writes a hash of its parameters to `out/params_rank{r}.json`."
    def on_train_begin(self, state, info): self.model, self.env, self.out = info["model"], info["env"], info["output"]
    def on_train_end(self, state, summary):
        h = hashlib.sha256()
        for name, p in sorted(self.model.named_parameters()): h.update(name.encode()); h.update(p.detach().cpu().numpy().tobytes())
        (self.out/f"params_rank{self.env.rank}.json").write_text(json.dumps({"rank": self.env.rank, "sha256": h.hexdigest()}))


def train_with_param_hash(cfg):
    return train(cfg, callbacks=[ParamHash()], progress=False)


class FailOnRank(Callback):
    "Raise on rank `rank` at its `at`-th log event (a failure that happens on one rank only)."
    def __init__(self, rank: int = 1, at: int = 2): self.rank, self.at, self.n = rank, at, 0
    def on_train_begin(self, state, info): self.env = info["env"]
    def on_log(self, state, logs):
        self.n += 1
        if self.env.rank == self.rank and self.n == self.at: raise RuntimeError(f"injected failure on rank {self.rank}")


def train_failing_on_rank1(cfg):
    "`train` with a callback that raises on rank 1 only (ranks 0 and 1 both log: the callback is added on every rank)."
    return train(cfg, callbacks=[FailOnRank()], progress=False)


# Put a folder holding this as `sitecustomize.py` first on PYTHONPATH (helpers.site_env) and every Python process (the
# CLI, torchrun's workers) imports it: at its 3rd optimizer step the rank named by one of these variables
#   DISTRINEWS_FAIL_RANK     raises (a rank-only Python failure)
#   DISTRINEWS_KILL_RANK     is killed by SIGKILL (no Python error at all)
#   DISTRINEWS_MISSING_RANK  sleeps instead of joining the all-reduce (a peer stuck in a driver call, or its network gone)
# a rank-only fault without a test hook in the package.
SITECUSTOMIZE = '''
import os
_faults = {k: int(os.environ[k]) for k in ("DISTRINEWS_FAIL_RANK", "DISTRINEWS_KILL_RANK", "DISTRINEWS_MISSING_RANK")
           if os.environ.get(k)}
if _faults:
    import signal, time
    import torch.distributed as dist
    import distrinews.loop as t
    _orig, _n = t.optimizer_step, [0]
    def optimizer_step(*args, **kw):
        _n[0] += 1
        if dist.is_initialized() and _n[0] == 3:
            rank = dist.get_rank()
            if _faults.get("DISTRINEWS_FAIL_RANK") == rank: raise RuntimeError("injected failure at step 3")
            if _faults.get("DISTRINEWS_KILL_RANK") == rank: os.kill(os.getpid(), signal.SIGKILL)
            if _faults.get("DISTRINEWS_MISSING_RANK") == rank: time.sleep(3600)
        return _orig(*args, **kw)
    t.optimizer_step = optimizer_step
'''


class SkippedSteps(Callback):
    "Each rank writes how many optimizer steps it skipped to `out/skipped_rank{r}.json`."
    def on_train_begin(self, state, info): self.env, self.out = info["env"], info["output"]
    def on_train_end(self, state, summary):
        (self.out/f"skipped_rank{self.env.rank}.json").write_text(json.dumps({"skipped": state.skipped_steps, "step": state.global_step}))


def train_with_inf_on_rank1_at_step3(cfg):
    "`train` where rank 1 finds an inf in its own gradient shard before its 3rd optimizer step (rank 0's shard is finite)."
    import torch.distributed as dist
    import distrinews.loop as t
    orig, n = t.optimizer_step, [0]
    def optimizer_step(model, *args, **kw):
        n[0] += 1
        if dist.get_rank() == 1 and n[0] == 3:
            g = next(p.grad for p in model.parameters() if p.grad is not None)
            (g.to_local() if hasattr(g, "to_local") else g).view(-1)[0] = float("inf")
        return orig(model, *args, **kw)
    t.optimizer_step = optimizer_step
    return train(cfg, callbacks=[SkippedSteps()], progress=False)
