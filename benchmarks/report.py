"""The benchmark report: tables, plots and `README.md` drawn from the results files `distrinews bench` writes.

    python benchmarks/report.py                  # reads benchmarks/results/*.json, writes benchmarks/README.md and plots/
    python benchmarks/report.py path/to/out      # the same for another `--out` folder

It measures nothing and the benchmark never calls it: it reads the latest run of each kind in `results/` (and the
latest `precision_accuracy_<date>.json`), so a results file from any machine can be rendered anywhere.
The benchmarks chapter (nbs/07_benchmarks.ipynb) loads this file to show the committed results.
"""
from __future__ import annotations
import json, statistics, sys
from pathlib import Path
from distrinews.bench import add_ratios, latest_rows

# Plots: one function per plot, each titled with the hardware that produced its rows.

def _save(fig, path: Path, title: str, hw: str) -> Path:
    "Title `fig` with what it shows and the hardware, write it to `path`, close it."
    import matplotlib.pyplot as plt
    fig.suptitle(f"{title}\n{hw}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def _label(r: dict) -> str:
    "How a training row is named on an axis."
    random = "\nrandom batches" if r["system"] == "distrinews" and r.get("variant") == "random batches" else ""
    return f"{r['system']}\n{r['world_size']} proc {r.get('precision', '')}{random}"

def plot_train_throughput(tr: list[dict], path: Path) -> Path:
    "Bars: training samples/s (and accuracy) of every training row."
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(tr)), 3.8))
    colors = ["#1f77b4" if r["system"] == "distrinews" else "#999" for r in tr]
    bars = ax.bar([_label(r) for r in tr], [r["samples_per_s"] for r in tr], color=colors)
    for b, r in zip(bars, tr):
        ax.annotate(f"{r['samples_per_s']:.1f}/s\nacc {100 * r['eval_accuracy']:.1f}%",
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("training samples / s")
    ax.set_ylim(0, max(r["samples_per_s"] for r in tr) * 1.3)
    ax.tick_params(axis="x", labelsize=7)
    return _save(fig, path, "Training throughput, same model, data and settings", tr[0]["hardware"])

def plot_mfu(tr: list[dict], path: Path) -> Path | None:
    "Bars: MFU of every training row against the peak its run measured and against the benchmark's (None without MFU)."
    import matplotlib.pyplot as plt
    tr = [r for r in tr if r.get("mfu") is not None]
    if not tr: return None
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(tr)), 3.8))
    xs = range(len(tr))
    for k, (m, p, name) in enumerate([("mfu", "peak_flops", "run's peak"), ("mfu_bench_peak", "bench_peak_flops", "benchmark's peak")]):
        rs = [(x, r) for x, r in zip(xs, tr) if r.get(m) is not None]
        bars = ax.bar([x + 0.4 * k - 0.2 for x, _ in rs], [100 * r[m] for _, r in rs], 0.4, label=f"of the {name}")
        for b, (_, r) in zip(bars, rs):
            ax.annotate(f"{100 * r[m]:.0f}%\n{r[p] / 1e9:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=6)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([_label(r) for r in tr])
    ax.set_ylabel("MFU, % of a measured matmul peak")
    ax.set_ylim(0, max(100 * r.get(m) for r in tr for m in ("mfu", "mfu_bench_peak") if r.get(m) is not None) * 1.35)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
    return _save(fig, path, "Model FLOPs utilization against matmul peaks measured in the same run (peak GFLOP/s on each bar)",
                 tr[0]["hardware"])

def _grouped(tr: list[dict]) -> dict:
    "distrinews' length-grouped rows per precision, by world size."
    out = {}
    for r in sorted(tr, key=lambda r: r["world_size"]):
        if r["system"] == "distrinews" and r.get("variant") != "random batches": out.setdefault(r.get("precision", ""), []).append(r)
    return out

def plot_scaling(tr: list[dict], path: Path) -> Path | None:
    "Speedup and efficiency of distrinews from 1 to N processes, per precision (None with one world size)."
    import matplotlib.pyplot as plt
    series = {p: rs for p, rs in _grouped(tr).items() if len(rs) > 1}
    if not series: return None
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for p, rs in series.items():
        ws = [r["world_size"] for r in rs]
        ax.plot(ws, [r["speedup"] for r in rs], "o-", label=f"speedup {p}")
        ax.plot(ws, [r["efficiency"] for r in rs], "s-", label=f"efficiency {p}")
    ws = sorted({r["world_size"] for rs in series.values() for r in rs})
    ax.plot(ws, ws, "k--", lw=0.8, label="ideal")
    ax.set_xlabel("processes (world size)")
    ax.set_xticks(ws)
    ax.legend(fontsize=8)
    return _save(fig, path, "distrinews scaling, 1 to N processes", tr[0]["hardware"])

def plot_accuracy(tr: list[dict], path: Path) -> Path | None:
    "Eval accuracy during training of each distrinews run, the HF Trainer's at the end (None without curves)."
    import matplotlib.pyplot as plt
    if not any(r.get("curve") for r in tr): return None
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for r in tr:
        if r.get("curve"):
            ax.plot([c[0] for c in r["curve"]], [c[1] for c in r["curve"]], "o-",
                    label=f"distrinews {r['world_size']} proc {r.get('precision', '')}, {r.get('variant', '')}")
        if r["system"] == "hf_trainer":
            ax.axhline(r["eval_accuracy"], color="#999", ls="--", label=f"HF Trainer {r.get('precision', '')} (end)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("eval accuracy")
    ax.legend(fontsize=7)
    return _save(fig, path, "Accuracy during training", tr[0]["hardware"])

def _server(r: dict) -> str:
    "How a serve row's server is named: system and the precision it ran in."
    if "dtype" in r: return f"{r['system']} {r['dtype']}"
    return r["system"] + (" int8" if r.get("quantized") else "")

def plot_serving(sv: list[dict], path: Path) -> Path:
    "Requests/s and p50/p99 latency of each server at each concurrency (first round)."
    import matplotlib.pyplot as plt
    sv = [r for r in sv if r.get("repeat", 0) == 0]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
    systems = sorted({_server(r) for r in sv})
    conc = sorted({r["concurrency"] for r in sv})
    w = 0.8 / len(systems)
    for i, s in enumerate(systems):
        rs = [next((r for r in sv if _server(r) == s and r["concurrency"] == c), None) for c in conc]
        xs = [j + i * w for j in range(len(conc))]
        a1.bar(xs, [r["rps"] if r else 0 for r in rs], w, label=s)
        a2.bar(xs, [r["p50_ms"] if r else 0 for r in rs], w, label=f"{s} p50")
        a2.scatter(xs, [r["p99_ms"] if r else 0 for r in rs], marker="_", s=200, color="k")
    for a in (a1, a2):
        a.set_xticks([j + w * (len(systems) - 1) / 2 for j in range(len(conc))])
        a.set_xticklabels([f"{c} clients" for c in conc])
    a1.set_ylabel("requests / s")
    a2.set_ylabel("latency ms (bar p50, tick p99)")
    a2.set_yscale("log")
    a1.legend(fontsize=8)
    texts = sv[0].get("texts", "texts not recorded")
    return _save(fig, path, f"Serving: distrinews vs one forward pass per request ({texts})", sv[0]["hardware"])

def plot_lengths(ln: list[dict], path: Path) -> Path:
    "Training samples/s and peak memory against tokens per row."
    import matplotlib.pyplot as plt
    fig, a1 = plt.subplots(figsize=(6.5, 3.4))
    L = [r["max_length"] for r in ln]
    a1.plot(L, [r["samples_per_s"] for r in ln], "o-")
    a1.set_xlabel("tokens per row")
    a1.set_ylabel("training samples / s")
    a1.set_xscale("log", base=2)
    a1.set_xticks(L)
    a1.set_xticklabels(L)
    a2 = a1.twinx()
    a2.plot(L, [r["peak_mem_mb"] for r in ln], "s--", color="C1")
    a2.set_ylabel("peak memory MB", color="C1")
    return _save(fig, path, f"Cost of sequence length (batch {ln[0]['batch_size']})", ln[0]["hardware"])

def plot_results(rows: list[dict], plots: Path) -> list[Path]:
    "Draw the PNG plots of one run's `rows` into `plots/`; returns their paths."
    import matplotlib
    matplotlib.use("Agg")
    plots = Path(plots)
    plots.mkdir(parents=True, exist_ok=True)
    of = lambda kind: [r for r in rows if r["kind"] == kind]
    tr, sv, ln = of("train"), of("serve"), of("length")
    made = []
    if tr: made += [plot_train_throughput(tr, plots/"train_throughput.png"), plot_mfu(tr, plots/"mfu.png"),
                    plot_scaling(tr, plots/"scaling.png"), plot_accuracy(tr, plots/"accuracy.png")]
    if sv: made.append(plot_serving(sv, plots/"serving.png"))
    if ln: made.append(plot_lengths(ln, plots/"lengths.png"))
    return [p for p in made if p is not None]


# Tables: one per kind of row, as Markdown lines.

def _native(bf16: dict | None) -> str:
    "A row's `cpu_bf16` in words: the native bf16 units it has, 'no', or 'not recorded'."
    return (", ".join(k for k, v in bf16.items() if v) or "no") if bf16 else "not recorded"

def _mfu_cells(r: dict) -> str:
    "Model GFLOP/s and the MFU against the run's peak, the benchmark's peak (each with the peak) and the vendor's: four cells."
    if r.get("mfu") is None: return "– | – | – | –"
    of = lambda m, p: f"{100 * r[m]:.0f} % of {r[p] / 1e9:,.0f}" if r.get(m) is not None else "–"
    vendor = f"{100 * r['mfu_vendor']:.1f} %" if r.get("mfu_vendor") is not None else "–"
    return f"{r['model_flops_per_s'] / 1e9:,.1f} | {of('mfu', 'peak_flops')} | {of('mfu_bench_peak', 'bench_peak_flops')} | {vendor}"

def train_table(tr: list[dict]) -> list[str]:
    "Markdown lines: one training row per line, with its precision, its ratio to the same-precision Trainer and its MFU."
    out = [f"Training on **{tr[0]['hardware']}** (native bf16: {_native(tr[0].get('cpu_bf16'))}). MFU: model FLOP/s "
           "over the FLOP/s of a matmul in the row's precision measured on this machine in this run, by the training run "
           "itself (a short product, all its processes) and by the benchmark before the runs of that precision (a longer "
           "one), in GFLOP/s; and over the vendor's peak (GPUs only).\n",
           "| system | batches | precision | processes | samples/s | real tokens/s | vs HF Trainer (same precision) "
           "| speedup vs 1 proc | model GFLOP/s | MFU (run's peak) | MFU (benchmark's peak) | MFU (vendor peak) "
           "| eval accuracy | macro-F1 | train s | wall s | peak MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    tr = [dict(r) for r in tr]
    add_ratios(tr)                 # rows written before the ratios were stored get them here
    for r in tr:
        vs = f"{r['vs_hf']:.2f}×" if "vs_hf" in r else "–"
        sp = f"{r['speedup']:.2f}× ({100 * r['efficiency']:.0f} %)" if "speedup" in r else "–"
        out.append(f"| {r['system']} | {r.get('variant', '')} | {r.get('precision', '?')} | {r['world_size']} | "
                   f"{r['samples_per_s']:.1f} | {r['tokens_per_s']:,.0f} | {vs} | {sp} | {_mfu_cells(r)} | "
                   f"{100 * r['eval_accuracy']:.2f} % | {r['eval_macro_f1']:.4f} | {r['train_s']:.0f} | {r['wall_s']:.0f} | "
                   f"{r['peak_mem_mb']:.0f} |")
    loads = [f"{r['load_avg_before']:.1f}→{r['load_avg_after']:.1f}" for r in tr if "load_avg_before" in r]
    if loads:
        out.append(f"\nLoad average (1 min) before→after each run, in order: {', '.join(loads)} (on "
                   f"{tr[0]['hardware'].split(', ')[-1]}; a load above the core count means something else shared the CPU).")
    return out + [""]

def strategy_table(st: list[dict]) -> list[str]:
    "Markdown lines: DDP and FSDP on the same processes, per precision: samples/s and training state per rank, FSDP over DDP."
    out = [f"DDP against FSDP on **{st[0]['hardware']}** (native bf16: {_native(st[0].get('cpu_bf16'))}), same run and "
           "recipe; training state = weights + gradients + optimizer state held by the largest rank.\n",
           "| precision | strategy | processes | samples/s | × DDP | training state per rank (MB) | × DDP | peak MB | eval accuracy |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in st:
        x = lambda k: f"{r[k]:.2f}×" if k in r else "–"
        out.append(f"| {r['precision']} | {r['strategy']} | {r['world_size']} | {r['samples_per_s']:.1f} | {x('vs_ddp')} | "
                   f"{r['state_bytes_per_rank'] / 1e6:,.1f} | {x('state_vs_ddp')} | {r['peak_mem_mb']:.0f} | {100 * r['eval_accuracy']:.2f} % |")
    return out + [""]

def serve_table(sv: list[dict]) -> list[str]:
    "Markdown lines: per server and clients, median requests/s, × naive (same rounds), p50/p99, errors; texts and CPU named."
    cells = {}
    for r in sv: cells.setdefault((_server(r), r["concurrency"]), []).append(r)
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    def vs_naive(rs):
        naive = {r.get("repeat", 0): r["rps"] for r in sv if r["system"] == "naive" and r["concurrency"] == rs[0]["concurrency"]}
        ratios = [r["rps"] / naive[r.get("repeat", 0)] for r in rs if naive.get(r.get("repeat", 0))]
        return f"{statistics.median(ratios):.2f}×" if ratios else "–"
    native = _native(sv[0].get("cpu_bf16"))
    rounds = len({r.get("repeat", 0) for r in sv})
    out = [f"Serving on **{sv[0]['hardware']}** (native bf16: {native}); texts sent: {sv[0].get('texts', 'not recorded')}; "
           f"{rounds} round(s), medians.\n",
           "| server | clients | requests/s | × naive | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
    for (s, c), rs in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.append(f"| {s} | {c} | {med(rs, 'rps'):.1f} | {vs_naive(rs)} | {med(rs, 'p50_ms'):.1f} | "
                   f"{med(rs, 'p99_ms'):.1f} | {sum(r['errors'] for r in rs)} |")
    return out + [""]

def lengths_table(ln: list[dict]) -> list[str]:
    "Markdown lines: samples/s, tokens/s and peak memory per sequence length."
    out = [f"| tokens per row (batch {ln[0]['batch_size']}) | samples/s | tokens/s | peak MB |", "|---|---|---|---|"]
    out += [f"| {r['max_length']} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['peak_mem_mb']:.0f} |" for r in ln]
    return out + [""]

def projection_table(pj: list[dict]) -> list[str]:
    "Markdown lines: the projected epoch on 2×T4 for each assumed MFU."
    out = ["Projected epoch of AG News (120k rows) on 2×T4 (assumptions in the chapter):", "",
           "| assumed MFU | steps | compute ms/step | all-reduce ms (exposed) | epoch s |", "|---|---|---|---|---|"]
    out += [f"| {100 * r['mfu']:.0f} % | {r['steps']} | {r['compute_ms']:.1f} | {r['allreduce_ms']:.1f} "
            f"({r['exposed_allreduce_ms']:.1f}) | {r['epoch_s']:.0f} |" for r in pj]
    return out + [""]

def load_precision_accuracy(out: Path) -> dict | None:
    "The latest `results/precision_accuracy_<date>.json` under `out`: one recipe trained in fp32 and in bf16 (None if none)."
    files = sorted((Path(out)/"results").glob("precision_accuracy_*.json"))
    return json.loads(files[-1].read_text()) if files else None

def precision_accuracy_table(d: dict | None) -> list[str]:
    "Markdown lines: held-out accuracy of one recipe trained in fp32 and in bf16, with eval n, the CPU and its native bf16."
    if d is None: return ["_No fp32/bf16 accuracy comparison here: it lives in the repository's `benchmarks/results/`._", ""]
    r = d["recipe"]
    rows = r["max_train_samples"] or "all"
    out = [f"Accuracy, fp32 against bf16 training ({d['date']}, **{d['hardware']}**, native bf16: {_native(d.get('cpu_bf16'))}): "
           f"`{r['model']}` on {rows} training rows of `{r['data']}`, {r['epochs']} epoch, {r['nproc']} processes, global batch "
           f"{r['global_batch']}, max length {r['max_length']}, lr {r['lr']:g}, seed {r['seed']}; the same held-out rows for both.\n",
           "| precision | eval accuracy | macro-F1 | eval loss | eval n | training rows | steps | samples/s |",
           "|---|---|---|---|---|---|---|---|"]
    for p, x in d["runs"].items():
        out.append(f"| {p} | {100 * x['eval_accuracy']:.2f} % | {x['eval_macro_f1']:.4f} | {x['eval_loss']:.4f} | {x['eval_n']} | "
                   f"{x['train_rows']:,} | {x['steps']} | {x['train_samples_per_s']:.1f} |")
    out.append(f"\nbf16 − fp32: **{d['bf16_minus_fp32_points']:+.2f} points** (the goal: within ±0.3).")
    return out + [""]

def results_table(rows: list[dict]) -> str:
    "Markdown tables of one run's rows (what `benchmarks/README.md` shows)."
    if not rows: return "_no results yet_\n"
    out = []
    for run in dict.fromkeys(r.get("run_id", "?") for r in rows):   # rows may come from several runs (`latest_rows`)
        rs = [r for r in rows if r.get("run_id", "?") == run]
        r0, kinds = rs[0], ", ".join(dict.fromkeys(r["kind"] for r in rs))
        vers = ", ".join(f"{k} {v}" for k, v in r0.get("versions", {}).items())
        out.append(f"Run `{run}` ({kinds}) on **{r0['hardware']}**; model `{r0.get('model_name', r0.get('model'))}`, "
                   f"data `{r0.get('data_name', r0.get('data'))}`; {vers}.\n")
    tables = {"train": train_table, "strategy": strategy_table, "serve": serve_table, "length": lengths_table,
              "projection": projection_table}
    for kind, table in tables.items():
        of_kind = [r for r in rows if r["kind"] == kind]
        if of_kind: out += table(of_kind)
    return "\n".join(out)

def write_readme(rows: list[dict], out: Path) -> Path:
    "Regenerate `out/README.md` from the latest run's rows (and the latest fp32/bf16 accuracy comparison, if there is one)."
    p = Path(out)/"README.md"
    plots = sorted((Path(out)/"plots").glob("*.png"))
    acc = load_precision_accuracy(out)
    acc = "\n## bf16 against fp32: accuracy\n\n" + "\n".join(precision_accuracy_table(acc)) if acc else ""
    p.write_text("# Benchmark results\n\nGenerated by `python benchmarks/report.py` from `results/*.json` (the latest run "
                 "of each kind, measured by `distrinews bench`); see [the benchmarks chapter](../nbs/07_benchmarks.ipynb) for what each number means.\n\n"
                 + results_table(rows) + "\n" + "".join(f"![{q.stem}](plots/{q.name})\n" for q in plots) + acc)
    return p

def _points(x: float) -> str:
    "A difference of accuracies (fractions) in points, signed: '−0.33', '+0.08', '±0.00'."
    p = round(100 * x, 2)
    return "±0.00" if p == 0 else f"{p:+.2f}".replace("-", "−")

def training_summary(tr: list[dict]) -> list[str]:
    "Markdown lines: the training rows side by side per precision (distrinews at 1 and N processes and the `Trainer`)."
    tr = [dict(r) for r in tr]
    add_ratios(tr)
    ps = list(dict.fromkeys(r["precision"] for r in tr))
    def pick(p, system, ws=1):
        return next(r for r in tr if r["precision"] == p and r["system"] == system and r["world_size"] == ws
                    and (system != "distrinews" or r["variant"] == "length-grouped"))
    n = max(r["world_size"] for r in tr)
    d1, dn, hf = ({p: pick(p, s, w) for p in ps} for s, w in [("distrinews", 1), ("distrinews", n), ("hf_trainer", 1)])
    ratio = lambda rs, k: f"{rs[ps[1]][k] / rs[ps[0]][k]:.2f}×" if len(ps) == 2 else ""
    lines = [("distrinews, 1 process, samples/s", {p: f"{d1[p]['samples_per_s']:.1f}" for p in ps}, ratio(d1, "samples_per_s")),
             ("HF `Trainer`, samples/s", {p: f"{hf[p]['samples_per_s']:.1f}" for p in ps}, ratio(hf, "samples_per_s")),
             ("distrinews / `Trainer`", {p: f"{d1[p]['vs_hf']:.2f}×" for p in ps}, ""),
             ("distrinews, MFU of the benchmark's matmul peak",
              {p: f"{100 * d1[p]['mfu_bench_peak']:.0f} % of {d1[p]['bench_peak_flops'] / 1e9:,.0f} GFLOP/s" for p in ps}, ""),
             ("`Trainer`, MFU of the same peak", {p: f"{100 * hf[p]['mfu_bench_peak']:.0f} %" for p in ps}, ""),
             (f"distrinews, 1 → {n} processes", {p: f"{dn[p]['speedup']:.2f}×" for p in ps}, ""),
             (f"eval accuracy, distrinews 1 process / {n} processes",
              {p: f"{100 * d1[p]['eval_accuracy']:.2f} % / {100 * dn[p]['eval_accuracy']:.2f} %" for p in ps},
              f"{_points(d1[ps[-1]]['eval_accuracy'] - d1[ps[0]]['eval_accuracy'])} points" if len(ps) == 2 else ""),
             ("eval accuracy, `Trainer`", {p: f"{100 * hf[p]['eval_accuracy']:.2f} %" for p in ps},
              f"{_points(hf[ps[-1]]['eval_accuracy'] - hf[ps[0]]['eval_accuracy'])} points" if len(ps) == 2 else ""),
             (f"distrinews − `Trainer`, 1 process / {n} processes",
              {p: f"{_points(d1[p]['eval_accuracy'] - hf[p]['eval_accuracy'])} / "
                  f"{_points(dn[p]['eval_accuracy'] - hf[p]['eval_accuracy'])} points" for p in ps}, "")]
    if n == 1: lines = [l for l in lines if "→" not in l[0]]     # one process only (one GPU): no scaling row
    out = ["| | " + " | ".join(ps) + (f" | {ps[1]} / {ps[0]} |" if len(ps) == 2 else " |"),
           "|---|" + "---|" * (len(ps) + (len(ps) == 2))]
    out += [f"| {name} | " + " | ".join(cells[p] for p in ps) + (f" | {last} |" if len(ps) == 2 else " |")
            for name, cells, last in lines]
    return out + [""]


def render(out: str | Path) -> list[Path]:
    "Draw `out/plots/*.png` and write `out/README.md` from the results files in `out/results/`; the files written."
    rows = latest_rows(out)
    return [*plot_results(rows, Path(out)/"plots"), write_readme(rows, out)]

if __name__ == "__main__":
    for p in render(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent): print(p)
