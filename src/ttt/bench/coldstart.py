"""Cold start of a saved model, each measurement in a fresh Python process: how long until it can decode, and how
fast it decodes from its first tokens (issue 15).

    ttt bench coldstart [MODEL_DIR] [--preset ttt-linear-tiny] [--export] [--paths eager aot compiled]
                        [--prompt 100] [--steps 16] [--repeats 3] [--threads 1] [--out results/coldstart]
    python -m ttt.bench.coldstart ...                                                      (the same)

MODEL_DIR is a `save_pretrained` folder; without it a model of --preset with random weights is saved under --dir
(and, with --export, its batch-1 float32 AOT decode package built by `ttt.models.export_decode`: minutes at 125m).
Paths, each a fresh `python -c` child (`CHILD`) timed from just before it is spawned:

    eager      a copy of the folder without its AOT packages (hard links): the default path when none were built
    aot        the folder with its packages (`ttt export`); skipped, with a note, when it has none
    compiled   the eager copy with `ttt_implementation="compiled"` (torch.compile at the first calls)

Each child reports, separately: `python_s` (process start to its first statement: the interpreter), `import_s`
(`import torch` and `import ttt`), `load_s` (`TTTForCausalLM.from_pretrained`; the packages are checked and loaded at
their first use, in the first step), `first_token_s` (the prompt's prefill through a fresh cache and the first
greedy token), `first_step_ms` (the first single-token step after it: a compile or a package load shows here) and
`decode_ms_token` (the median of the next --steps steps: the rate from the first tokens). `ready_s` = python + import
+ load; `to_first_token_s` = ready + first token. Repeats alternate over the paths; the tables give medians. The
weights come from the OS file cache after the first child (a truly cold disk read is not measured).
Writes OUT/coldstart.md (command, machine, table), OUT/coldstart.csv, OUT/coldstart.png and OUT/coldstart.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PATHS = ("eager", "aot", "compiled")
# seconds from process start (the parent's clock, passed as argv[1]) to each point, measured in the child
CHILD = r"""
import sys, time, json, statistics
start = float(sys.argv[1])
entered = time.time()
import torch
torch.set_num_threads(int(sys.argv[3]))
import ttt
from ttt import TTTCache, TTTForCausalLM
imported = time.time()
model = TTTForCausalLM.from_pretrained(sys.argv[2], ttt_implementation=sys.argv[4]).eval()
loaded = time.time()
prompt, steps = int(sys.argv[5]), int(sys.argv[6])
ids = torch.randint(0, model.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
times = []
with torch.no_grad():
    cache = TTTCache.from_model(model, 1)
    token = model(ids, cache=cache, logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)
    first = time.time()
    for _ in range(steps + 1):
        t = time.perf_counter()
        token = model(token, cache=cache).logits[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - t)
print(json.dumps(dict(
    python_s=entered - start, import_s=imported - entered, load_s=loaded - imported, first_token_s=first - loaded,
    first_step_ms=1e3 * times[0], decode_ms_token=1e3 * statistics.median(times[1:]) if steps else None,
    packages=len(getattr(model, "_decode_artifacts", {})),
)))
"""
FIELDS = "python_s import_s load_s first_token_s first_step_ms decode_ms_token".split()


def measure_once(
    folder: str | os.PathLike, threads: int, implementation: str = "auto", prompt: int = 100, steps: int = 16
) -> dict[str, Any]:
    """One cold start in a fresh process: the CHILD fields, plus `ready_s` (process start to the model loaded) and
    `to_first_token_s` (process start to the first token), in seconds. Raises subprocess.CalledProcessError (with
    the child's stderr) when the child fails."""
    from .runner import child_env

    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, repr(start), str(folder), str(threads), implementation, str(prompt), str(steps)],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(threads),
    )
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["ready_s"] = record["python_s"] + record["import_s"] + record["load_s"]
    record["to_first_token_s"] = record["ready_s"] + record["first_token_s"]
    return record


def without_packages(folder: Path, into: Path) -> Path:
    """`into`: the files of `folder` (hard links, or copies across file systems) without its AOT packages."""
    from ..models import AOT_FOLDER

    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    for item in folder.iterdir():
        if item.name != AOT_FOLDER and item.is_file():
            try:
                os.link(item, into / item.name)
            except OSError:
                shutil.copy2(item, into / item.name)
    return into


def has_packages(folder: Path) -> bool:
    from ..models import AOT_FOLDER

    return (folder / AOT_FOLDER).is_dir() and any((folder / AOT_FOLDER).iterdir())


def prepare(args: argparse.Namespace, log=print) -> tuple[Path, str]:
    """The model folder (MODEL_DIR, or a saved --preset model, exported with --export) and its name."""
    if args.model_dir:
        folder = Path(args.model_dir)
        if not (folder / "config.json").is_file():
            raise ValueError(f"MODEL_DIR {str(folder)!r} is not a save_pretrained folder (no config.json)")
        return folder, folder.name
    import torch

    from ..models import TTTForCausalLM, export_decode, get_preset

    folder = Path(args.dir) / args.preset
    shutil.rmtree(folder, ignore_errors=True)
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(args.preset)).eval()
    model.save_pretrained(folder)
    if args.export:
        start = time.perf_counter()
        export_decode(model, folder, [1], log=lambda _: None)
        log(f"exported the batch-1 float32 decode package in {time.perf_counter() - start:.0f} s")
    return folder, args.preset


def run(args: argparse.Namespace, log=print) -> tuple[list[dict[str, Any]], list[str], str]:
    """Every path `args.repeats` times (alternating); returns the rows, notes on skipped paths and the model name."""
    folder, name = prepare(args, log)
    eager = without_packages(folder, Path(args.dir) / f"{name}-eager")
    targets: dict[str, tuple[Path, str]] = {}
    notes = []
    for path in args.paths:
        if path == "aot" and not has_packages(folder):
            notes.append(f"aot: {folder} has no AOT decode packages (run `ttt export {folder}`, or pass --export)")
            continue
        targets[path] = (folder, "auto") if path == "aot" else (eager, "compiled" if path == "compiled" else "auto")
    rows = []
    for repeat in range(args.repeats):
        for path, (where, implementation) in targets.items():
            record = measure_once(where, args.threads, implementation, args.prompt, args.steps)
            rows.append(dict(model=name, path=path, repeat=repeat, **record))
            rate = record["decode_ms_token"]
            log(
                f"r{repeat} {path}: ready {record['ready_s']:.2f} s, first token {record['to_first_token_s']:.2f} s"
                + ("" if rate is None else f", then {rate:.1f} ms/token")
            )
    return rows, notes, name


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median of each field per path, in the order the paths ran."""
    out = []
    for path in dict.fromkeys(r["path"] for r in rows):
        group = [r for r in rows if r["path"] == path]
        s: dict[str, Any] = dict(model=group[0]["model"], path=path, n=len(group), packages=group[0]["packages"])
        for key in (*FIELDS, "ready_s", "to_first_token_s"):
            values = [r[key] for r in group if r[key] is not None]
            s[key] = statistics.median(values) if values else None
        out.append(s)
    return out


def table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| model | path | python (s) | import ttt (s) | load (s) | ready (s) | first token (s) "
        "| start → first token (s) | first step (ms) | then ms/token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        rate = "-" if s["decode_ms_token"] is None else f"{s['decode_ms_token']:.1f}"
        lines.append(
            f"| {s['model']} | {s['path']} ({s['packages']} packages) | {s['python_s']:.2f} | {s['import_s']:.2f} | "
            f"{s['load_s']:.2f} | {s['ready_s']:.2f} | {s['first_token_s']:.2f} | {s['to_first_token_s']:.2f} | "
            f"{s['first_step_ms']:.1f} | {rate} |"
        )
    return "\n".join(lines)


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Stacked horizontal bars per path: python, import, load, first token (seconds from process start)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = (("python_s", "python"), ("import_s", "import ttt"), ("load_s", "load"), ("first_token_s", "first token"))
    fig, ax = plt.subplots(figsize=(6.4, 0.6 * len(summary) + 2.0))
    labels = [s["path"] for s in summary]
    left = [0.0] * len(summary)
    for key, label in parts:
        widths = [s[key] for s in summary]
        ax.barh(labels, widths, left=left, label=label)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("seconds from process start")
    ax.set_title(f"cold start to the first token: {summary[0]['model']}", fontsize=10)
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rows: list[dict[str, Any]], notes: list[str], out: Path, command: str, threads: int) -> str:
    """OUT/coldstart.md, .csv, .json and .png; returns the markdown."""
    from .cli import machine_description

    summary = summarise(rows)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description(threads)
    text = f"`{command}`\n\nmachine: {machine}\n\n{table(summary)}\n" + "".join(f"\nNote: {n}\n" for n in notes)
    (out / "coldstart.md").write_text(text)
    with open(out / "coldstart.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    (out / "coldstart.json").write_text(json.dumps(dict(command=command, machine=machine, rows=rows), indent=1))
    plot(summary, out / "coldstart.png")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", nargs="?", help="a save_pretrained folder (default: a --preset model, random weights)")
    p.add_argument("--preset", default="ttt-linear-tiny", help="the model to build without MODEL_DIR")
    p.add_argument("--export", action="store_true", help="build the batch-1 AOT decode package of the --preset model")
    p.add_argument("--paths", nargs="+", default=["eager", "aot"], choices=PATHS)
    p.add_argument("--prompt", type=int, default=100, help="prompt tokens before the first token")
    p.add_argument("--steps", type=int, default=16, help="single-token steps timed after the first")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dir", default="/tmp/ttt_coldstart", help="where the built model and the eager copy go")
    p.add_argument("--out", default="results/coldstart")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ttt bench coldstart", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    if args.prompt < 1 or args.steps < 0 or args.repeats < 1 or args.threads < 1:
        p.error("--prompt, --repeats and --threads must be >= 1, --steps >= 0")
    try:
        rows, notes, _ = run(args)
    except ValueError as err:
        p.error(str(err))
    if not rows:
        p.error("no path to measure: " + "; ".join(notes))
    command = "ttt bench coldstart " + " ".join(sys.argv[1:] if argv is None else argv)
    text = write(rows, notes, Path(args.out), command, args.threads)
    print(text)
    print(f"wrote {args.out}/coldstart.md, coldstart.csv, coldstart.json, coldstart.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
