"""Load benchmark of `ttt serve`: a bounded number of concurrent streaming clients against a server on loopback,
for each (server, concurrency, prompt length): generated tokens/s, time to first token and inter-token latency
(p50 / p99), and the server's peak resident memory; plus the cold start of each server (process start to ready,
and to the first token of a first request). It stops by itself.

Servers, side by side in one run: `ttt serve` (continuous batching, --max-batch = the largest concurrency),
`ttt serve --max-batch 1` (batching off), and `transformers serve` with the matched-size Transformer++ baseline,
without (`transformers`) and with `--continuous-batching` (`transformers-cb`, not in the default --servers)
(skipped with a note when it cannot start). Inter-token latency is measured on the client, per SSE event as it is
parsed: events that arrive in one read come out nearly 0 ms apart (see docs/serving.md). The models are built here
with random weights (the byte tokenizer): speed and memory do not depend on what the weights learned.

    python -m ttt.bench.serve_load --preset ttt-linear-tiny --out results/serve_load
    ttt bench serve --preset ttt-linear-tiny --out results/serve_load          (the same)

Writes OUT/serve_load.csv, OUT/serve_load.png and OUT/serve_load.md (the table, the command and the machine).
Peak memory is the kernel's high-water mark of the server process (VmHWM), reset before each cell.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid: int, field: str) -> int | None:
    """A `VmXXX:` value of /proc/PID/status in KiB (None when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@dataclass
class Server:
    """A server process on loopback: `cmd` with `{port}` filled in."""

    name: str
    cmd: list[str]
    model: str
    extra_body: dict

    env: dict[str, str] | None = None

    def start(self, log: Path, timeout_s: float) -> tuple[float, float]:
        """Start it; returns (seconds to ready, seconds to the first token of a first request)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [part.replace("{port}", str(self.port)) for part in self.cmd]
        started = time.monotonic()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): see {log}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout_s:
                self.stop()
                raise RuntimeError(f"{self.name} was not ready after {timeout_s:.0f} s: see {log}")
            time.sleep(0.05)
        ready = time.monotonic() - started
        first = asyncio.run(self._first_token())
        return ready, first + ready

    async def _first_token(self) -> float:
        async with httpx.AsyncClient(timeout=600) as client:
            t0 = time.monotonic()
            result = await one_request(client, self, "Hello", 2)
            return result[0] if result else time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def one_request(client: httpx.AsyncClient, server: Server, prompt: str, max_tokens: int):
    """One streaming completion; (ttft_s, [inter-token gaps], tokens) or None when it failed."""
    body = {"model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body.update(server.extra_body)
    t0 = time.monotonic()
    times: list[float] = []
    async with client.stream("POST", server.url + "/v1/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            print(f"  {server.name}: HTTP {response.status_code}: {response.text[:200]}", file=sys.stderr)
            return None
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            # one chunk per generated token (its text may be empty: an incomplete UTF-8 sequence)
            if choices and choices[0].get("finish_reason") is None:
                times.append(time.monotonic())
    if not times:
        return None
    return times[0] - t0, [b - a for a, b in zip(times, times[1:])], len(times)


async def run_cell(server: Server, concurrency: int, prompt_len: int, max_tokens: int, requests: int) -> dict:
    prompt = ("All the world's a stage, and all the men and women merely players. " * (prompt_len // 60 + 2))[
        : prompt_len - 1
    ]
    results: list = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            results.append(await one_request(client, server, prompt, max_tokens))

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=1800, limits=limits) as client:
        t0 = time.monotonic()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.monotonic() - t0
    ok = [r for r in results if r is not None]
    tokens = sum(r[2] for r in ok)
    gaps = [g for r in ok for g in r[1]]
    return {
        "server": server.name,
        "concurrency": concurrency,
        "prompt_tokens": prompt_len,
        "requests": len(ok),
        "failed": len(results) - len(ok),
        "generated_tokens": tokens,
        "tokens_per_s": tokens / wall if wall else float("nan"),
        "ttft_p50_ms": 1e3 * percentile([r[0] for r in ok], 50),
        "ttft_p99_ms": 1e3 * percentile([r[0] for r in ok], 99),
        "itl_p50_ms": 1e3 * percentile(gaps, 50),
        "itl_p99_ms": 1e3 * percentile(gaps, 99),
        "wall_s": wall,
    }


def build_models(out: Path, preset: str) -> tuple[Path, Path]:
    """Random-weight folders of `preset` and of its matched Transformer++ (byte tokenizer), built once."""
    import torch

    from ..data import ByteTokenizer
    from ..models import TTTForCausalLM, get_preset
    from ..train.models import build_model
    from ..train.pretrained import save_pretrained_folder

    tokenizer = ByteTokenizer()
    size = preset.rsplit("-", 1)[1]
    ttt_dir, baseline_dir = out / "models" / preset, out / "models" / f"transformer++-{size}"
    torch.manual_seed(0)
    if not (ttt_dir / "config.json").is_file():
        model = TTTForCausalLM(get_preset(preset, vocab_size=tokenizer.vocab_size))
        save_pretrained_folder(model, tokenizer, ttt_dir, overwrite=True)
    if not (baseline_dir / "config.json").is_file():
        save_pretrained_folder(build_model(f"transformer++-{size}", tokenizer.vocab_size), tokenizer, baseline_dir)
    return ttt_dir, baseline_dir


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = sorted({r["server"] for r in rows})
    levels = sorted({r["concurrency"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for server in servers:
        for c in levels:
            cell = sorted(
                (r for r in rows if r["server"] == server and r["concurrency"] == c), key=lambda r: r["prompt_tokens"]
            )
            if not cell:
                continue
            x = [r["prompt_tokens"] for r in cell]
            axes[0].plot(x, [r["tokens_per_s"] for r in cell], marker="o", label=f"{server} c={c}")
            axes[1].plot(x, [r["peak_rss_mib"] for r in cell], marker="o", label=f"{server} c={c}")
    for ax, label in zip(axes, ("generated tokens/s", "server peak RSS (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(rows: list[dict], cold: list[dict], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}",
        "",
        "| server | concurrency | prompt tokens | requests | tokens/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) "
        "| peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['concurrency']} | {r['prompt_tokens']} | {r['requests']} | {r['tokens_per_s']:.1f} "
            f"| {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} "
            f"| {r['peak_rss_mib']:.0f} |"
        )
    lines += ["", "| server | start → ready (s) | start → first token (s) |", "|---|---:|---:|"]
    lines += [f"| {c['server']} | {c['ready_s']:.2f} | {c['first_token_s']:.2f} |" for c in cold]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.serve_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="ttt-linear-tiny", help="TTT preset (random weights); baseline matched")
    parser.add_argument("--model-dir", help="serve this TTT model folder instead of building one")
    parser.add_argument("--out", default="results/serve_load")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--prompt-lens", default="128,1024,8192")
    parser.add_argument("--max-tokens", type=int, default=32, help="generated tokens per request")
    parser.add_argument("--requests", type=int, default=2, help="requests per client per cell")
    parser.add_argument("--servers", default="ttt,ttt-unbatched,transformers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the servers (0: their default)")
    parser.add_argument("--start-timeout", type=float, default=300)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    lengths = [int(n) for n in args.prompt_lens.split(",")]
    ttt_dir, baseline_dir = build_models(out, args.preset)
    if args.model_dir:
        ttt_dir = Path(args.model_dir)
    threads = ["--threads", str(args.threads)] if args.threads else []
    ttt_cmd = [sys.executable, "-m", "ttt.cli", "serve", str(ttt_dir), "--port", "{port}", "--max-tokens", "100000"]
    ttt_cmd += ["--session-store", str(out / "sessions"), "--max-queue", "1024", *threads]
    extra = {"ignore_eos": True}
    servers = {
        "ttt": Server("ttt", [*ttt_cmd, "--max-batch", str(max(levels))], ttt_dir.name, extra),
        "ttt-unbatched": Server("ttt-unbatched", [*ttt_cmd, "--max-batch", "1"], ttt_dir.name, extra),
    }
    tf = shutil.which("transformers")
    if tf is not None:
        cmd = [tf, "serve", str(baseline_dir.resolve()), "--port", "{port}", "--host", "127.0.0.1", "--device", "cpu"]
        servers["transformers"] = Server("transformers", cmd, str(baseline_dir.resolve()), {})
        # its continuous batching (paged attention), off by default
        cb = [*cmd, "--continuous-batching"]
        servers["transformers-cb"] = Server("transformers-cb", cb, str(baseline_dir.resolve()), {})
    if args.threads:
        # every server (transformers serve has no thread option) gets the same number of threads
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        for each in servers.values():
            each.env = env
    rows: list[dict] = []
    cold: list[dict] = []
    notes: list[str] = []
    for name in args.servers.split(","):
        server = servers.get(name)
        if server is None:
            notes.append(f"{name}: not available here (the `transformers` command is missing)")
            continue
        print(f"== {name}", flush=True)
        try:
            ready, first = server.start(out / f"{name}.log", args.start_timeout)
        except RuntimeError as err:
            notes.append(f"{name}: could not be started: {err}")
            print(f"  {notes[-1]}", flush=True)
            continue
        cold.append({"server": name, "ready_s": ready, "first_token_s": first})
        print(f"  cold start: ready {ready:.2f} s, first token {first:.2f} s", flush=True)
        try:
            for length in lengths:
                for c in levels:
                    reset_peak(server.proc.pid)
                    row = asyncio.run(run_cell(server, c, length, args.max_tokens, c * args.requests))
                    row["peak_rss_mib"] = (status_kib(server.proc.pid, "VmHWM") or 0) / 1024
                    rows.append(row)
                    print(
                        f"  c={c:3d} prompt={length:5d}: {row['tokens_per_s']:8.1f} tok/s  TTFT p50 "
                        f"{row['ttft_p50_ms']:7.0f} ms  ITL p50/p99 {row['itl_p50_ms']:6.1f}/{row['itl_p99_ms']:6.1f} "
                        f"ms  RSS {row['peak_rss_mib']:6.0f} MiB  failed {row['failed']}",
                        flush=True,
                    )
        finally:
            server.stop()
    if rows:
        with open(out / "serve_load.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot(rows, out / "serve_load.png")
    command = "python -m ttt.bench.serve_load " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(rows, cold, command) + "".join(f"\nNote: {n}\n" for n in notes)
    (out / "serve_load.md").write_text(text)
    print(text)
    print(f"wrote {out}/serve_load.csv, serve_load.png, serve_load.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
