"""Process facts for benchmark workers, standard library only (the official-code worker imports this file too, under
another interpreter that cannot import `ttt`).

Peak memory is the kernel's high-water mark of the resident set (VmHWM in /proc/self/status); writing "5" to
/proc/self/clear_refs resets it, so each measured phase reports its own peak (model weights included). The memory
limit is RLIMIT_DATA, which since Linux 4.7 also counts the private anonymous mappings large tensors live in: an
allocation past it fails with a catchable error ("can't allocate memory") instead of waking the OOM killer.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable

RESULT_PREFIX = "@@bench "


def emit(record: dict) -> None:
    """One result line on stdout for the runner (it reads lines starting with RESULT_PREFIX)."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(record) + "\n")
    sys.stdout.flush()


def status_kib(field: str, pid: int | str = "self") -> int | None:
    """A `VmXXX:` value of /proc/PID/status in KiB (None if the process or the field is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    kib = status_kib("VmHWM")
    if kib is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS; only a fallback
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def limit_memory(gib: float) -> None:
    """Cap this process's data segment (heap and anonymous mappings) at `gib` GiB."""
    limit = int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def is_oom(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median seconds of `repeats` calls after `warmup` calls, and the individual times."""
    for _ in range(warmup):
        fn()
    times = [timed(fn) for _ in range(repeats)]
    return statistics.median(times), times
