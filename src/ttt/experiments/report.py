"""Tables and plots of the experiments (markdown tables, matplotlib Agg figures)."""

from __future__ import annotations

from typing import Any


def ladder_table(results: list[dict[str, Any]]) -> str:
    """The ladder as a markdown table: val loss (nats/byte), bits/byte, perplexity, the change from the row above."""
    lines = [
        "| # | row | params | val loss (nats/byte) | bits/byte | ppl | Δ loss (vs parent row) | paper ppl (125M) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    loss_of = {r["row"]: r["val_loss"] for r in results}
    for i, r in enumerate(results):
        # each row against the row it modifies (the previous one; extra rows name theirs)
        parent = r.get("parent", i)
        delta = f"{r['val_loss'] - loss_of[parent]:+.4f}" if parent in loss_of else ""
        paper = "" if r.get("paper_ppl") is None else r["paper_ppl"]
        lines.append(
            f"| {r['row']} | {r['name']} | {r['params'] / 1e3:.0f}k | {r['val_loss']:.4f} | {r['bits_per_byte']:.4f} "
            f"| {r['val_ppl']:.3f} | {delta} | {paper} |"
        )
    return "\n".join(lines)


def _mixer_order(names: set[str]) -> list[str]:
    from .mqar.model import MIXERS

    return sorted(names, key=lambda m: (MIXERS.index(m) if m in MIXERS else len(MIXERS), m))


def _setting(r: dict[str, Any]) -> tuple[int, int, int]:
    return r["seq_len"], r["num_kv_pairs"], r["d_model"]


def mqar_best(results: list[dict[str, Any]]) -> dict[tuple[str, int, int, int], dict[str, Any]]:
    """Per (mixer, T, N, d): the run with the highest final test accuracy over the learning rates, with the number
    of learning rates tried under "lrs_tried"."""
    best: dict[tuple[str, int, int, int], dict[str, Any]] = {}
    tried: dict[tuple[str, int, int, int], list[float]] = {}
    for r in results:
        key = (r["mixer"], *_setting(r))
        tried.setdefault(key, []).append(r["lr"])
        if key not in best or r["accuracy"] > best[key]["accuracy"]:
            best[key] = r
    return {k: {**v, "lrs_tried": sorted(tried[k])} for k, v in best.items()}


def mqar_table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per mixer, one column per (T, N, d); cell = best accuracy (its lr, runs tried)."""
    best = mqar_best(results)
    settings = sorted({k[1:] for k in best})
    mixers = _mixer_order({r["mixer"] for r in results})
    head = "| mixer | " + " | ".join(f"T={t}, N={n}, d={d}" for t, n, d in settings) + " |"
    lines = [head, "|---|" + "---:|" * len(settings)]
    for mixer in mixers:
        cells = []
        for s in settings:
            r = best.get((mixer, *s))
            if r is None:
                cells.append("not run")
            else:
                cells.append(f"{r['accuracy']:.3f} (lr {r['lr']:g}, {len(r['lrs_tried'])} lrs)")
        lines.append(f"| {mixer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mqar_plot(results: list[dict[str, Any]], path) -> None:
    """Best accuracy over learning rates against the bytes of recurrent state, one panel per (T, N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    best = mqar_best(results)
    if not best:
        return
    panels = sorted({k[1:3] for k in best})
    mixers = _mixer_order({k[0] for k in best})
    markers = dict(zip(mixers, "osD^vP*X"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (t, n) in zip(axes[0], panels):
        for mixer in mixers:
            pts = sorted(
                (r["state_bytes"], r["accuracy"]) for k, r in best.items() if k[0] == mixer and k[1:3] == (t, n)
            )
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker=markers[mixer], label=mixer)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1024:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"MQAR T={t}, N={n}")
        ax.set_xlabel("recurrent state (KiB, fp32, 2 layers)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (best lr)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def long_context_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per model, params, val loss and the mean loss over each octave of positions."""
    if not results:
        return "(no finished model)"
    octaves = list(results[0]["octaves"])
    lines = [
        "| model | params | val loss | " + " | ".join(f"pos {o}" for o in octaves) + " |",
        "|---|---:|---:|" + "---:|" * len(octaves),
    ]
    for r in results:
        cells = " | ".join(f"{r['octaves'][o]:.3f}" for o in octaves)
        lines.append(f"| {r['name']} | {r['params'] / 1e3:.0f}k | {r['val_loss']:.4f} | {cells} |")
    return "\n".join(lines)


def ladder_plot(results: list[dict[str, Any]], path) -> None:
    """Validation loss per ladder row (bars), the paper's perplexity on a second axis (line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r.get("paper_ppl") is not None]
    names = [r["name"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(range(len(results)), [r["val_loss"] for r in results], color="tab:blue", alpha=0.8, label="ours")
    lo = min(r["val_loss"] for r in results)
    ax.set_ylim(lo * 0.9, max(r["val_loss"] for r in results) * 1.03)
    ax.set_ylabel("val loss, nats/byte (ours)")
    ax.set_xticks(range(len(results)), names, rotation=25, ha="right", fontsize=8)
    twin = ax.twinx()
    twin.plot(range(len(results)), [r["paper_ppl"] for r in results], "o-", color="tab:red", label="paper ppl")
    twin.set_ylabel("paper ppl (125M, Pile 2k)", color="tab:red")
    ax.set_title("Table 1 ladder: ours (bars) vs paper (line)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Regenerate the tables (printed) and figures (docs/results/) from the result folders."""
    import argparse
    import json
    import shutil
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--ladder", default="results/ladder")
    parser.add_argument("--mqar", default="results/mqar")
    parser.add_argument(
        "--long-context", default="results/long_context,results/long_context_8k", help="folders, comma-separated"
    )
    parser.add_argument("--figures", default="docs/results")
    args = parser.parse_args(argv)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    ladder = Path(args.ladder) / "ladder.json"
    if ladder.exists():
        results = json.loads(ladder.read_text())
        print("## ladder\n\n" + ladder_table(results) + "\n")
        ladder_plot(results, figures / "ladder.png")
    runs = sorted((Path(args.mqar) / "runs").glob("*.json"))
    if runs:
        results = [json.loads(p.read_text()) for p in runs]
        print("## MQAR\n\n" + mqar_table(results) + "\n")
        print(mqar_runs_table(results) + "\n")
        mqar_plot(results, figures / "mqar.png")
    for folder in args.long_context.split(","):
        folder = Path(folder)
        if (folder / "eval" / "eval.json").exists():
            from .long_context import summarize

            print(f"## long context ({folder})\n\n" + long_context_table(summarize(folder)) + "\n")
            shutil.copy(folder / "eval" / "per_position.png", figures / f"{folder.name}.png")


def mqar_runs_table(results: list[dict[str, Any]]) -> str:
    """Markdown: every MQAR run (the whole learning-rate sweep)."""
    lines = [
        "| mixer | T | N | d | lr | accuracy | best epoch acc | steps | seconds | diverged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    order = _mixer_order({r["mixer"] for r in results})
    for r in sorted(results, key=lambda r: (*_setting(r), order.index(r["mixer"]), r["lr"])):
        lines.append(
            f"| {r['mixer']} | {r['seq_len']} | {r['num_kv_pairs']} | {r['d_model']} | {r['lr']:g} | "
            f"{r['accuracy']:.3f} | {r['best_accuracy']:.3f} | {r['steps']} | {r['seconds']:.0f} | "
            f"{'yes' if r['diverged'] else ''} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
