"Functions the multi-process tests launch (they must live in an importable module for spawned processes)."
import hashlib, json
from distrinews.train import Callback, train


class ParamHash(Callback):
    "After training, each rank writes a hash of its parameters to `out/params_rank{r}.json`."
    def on_train_begin(self, state, info): self.model, self.env, self.out = info["model"], info["env"], info["output"]
    def on_train_end(self, state, summary):
        h = hashlib.sha256()
        for name, p in sorted(self.model.named_parameters()): h.update(name.encode()); h.update(p.detach().cpu().numpy().tobytes())
        (self.out/f"params_rank{self.env.rank}.json").write_text(json.dumps({"rank": self.env.rank, "sha256": h.hexdigest()}))


def train_with_param_hash(cfg):
    return train(cfg, callbacks=[ParamHash()], progress=False)
