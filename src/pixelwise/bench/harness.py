"""Timing utilities shared by every benchmark area.

The machine is shared and noisy, so every figure is the median of several timed runs
after warm-up, reported with min and max and the thread count. Two variants are always
timed interleaved (A B A B ...) in one loop and compared by the median of per-round
ratios, so a burst of load from a neighbour hits both variants alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements of one quantity (seconds, or a rate)."""

    median: float
    min: float
    max: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(values: list[float]) -> Stats:
    """Median, min and max of a non-empty list of measurements."""
    if not values:
        raise ValueError("summarize() needs at least one measurement")
    return Stats(statistics.median(values), min(values), max(values), len(values))


def rate(seconds: Stats, items: float) -> Stats:
    """Turn per-call times into items per second (the slowest call gives the minimum rate)."""
    return Stats(items / seconds.median, items / seconds.max, items / seconds.min, seconds.n)


def time_call(fn: Callable[[], Any]) -> float:
    """Wall time of one call, in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> Stats:
    """Time `fn` `repeats` times after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return summarize([time_call(fn) for _ in range(repeats)])


def interleave(
    variants: dict[str, Callable[[], Any]], *, warmup: int = 1, repeats: int = 5
) -> dict[str, list[float]]:
    """Time several variants in rounds (A B A B ...); returns each variant's per-round seconds.

    Warm-up rounds run every variant too, so caches and oneDNN kernels are primed for all.
    """
    if not variants:
        raise ValueError("interleave() needs at least one variant")
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(time_call(fn))
    return times


def interleave_within(
    variants: dict[str, Callable[[], Any]], *, warmup: int, repeats: int, budget_s: float,
    min_repeats: int = 3,
) -> dict[str, list[float]]:
    """Like `interleave`, but fewer rounds (not below `min_repeats`) when a round is slow.

    The last warm-up round is timed to estimate a round's cost, so slow models (VGG-sized
    training steps on 2 cores) still finish in `budget_s` while fast ones get every repeat.
    """
    for _ in range(max(0, warmup - 1)):
        for fn in variants.values():
            fn()
    round_s = sum(time_call(fn) for fn in variants.values())
    rounds = max(min_repeats, min(repeats, int(budget_s // max(round_s, 1e-9))))
    return interleave(variants, warmup=0, repeats=rounds)


def paired_ratio(numerator: list[float], denominator: list[float]) -> Stats:
    """Per-round ratios numerator[i] / denominator[i] of interleaved timings, summarised.

    With times, `paired_ratio(slow, fast)` is the speed-up of `fast` over `slow`.
    """
    if len(numerator) != len(denominator):
        raise ValueError("paired_ratio() needs timings from the same rounds")
    return summarize([a / b for a, b in zip(numerator, denominator)])


def repo_root() -> Path:
    """The repository checkout that holds configs/ (the package's own, when installed editable
    from one), else the current directory: `make bench` runs from the repository root."""
    checkout = Path(__file__).resolve().parents[3]
    return checkout if (checkout / "configs").is_dir() else Path.cwd()


def package_env() -> dict[str, str]:
    """The environment for a benchmark subprocess: the same pixelwise first on its path."""
    import pixelwise

    src = str(Path(pixelwise.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p))


def thread_count() -> int:
    """Threads torch uses for intra-op parallelism (what the figures were measured with)."""
    import torch

    return torch.get_num_threads()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's own memory so far, in bytes.

    Reads VmHWM from /proc/self/status: unlike getrusage's ru_maxrss, which Linux carries
    across fork + exec, it starts afresh in a new program, so a subprocess started by a big
    parent reports only its own peak. Falls back to ru_maxrss where /proc is absent.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


# The instruction sets that decide the fast paths: AVX2 (fp32 kernels), AVX-512, native bf16.
KEY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine_key(machine: dict[str, Any]) -> str:
    """What makes figures comparable: the CPU model and which of KEY_FLAGS it has."""
    flags = set(machine.get("cpu_flags") or [])
    return f"{machine.get('cpu_model') or 'unknown CPU'} ({', '.join(f for f in KEY_FLAGS if f in flags) or 'none of ' + ', '.join(KEY_FLAGS)})"


def machine_line(machine: dict[str, Any]) -> str:
    """E.g. 'AMD EPYC; avx2 yes, avx512f yes, avx512_bf16 yes, amx_bf16 no; 2 cores' (printed by each run)."""
    flags = set(machine.get("cpu_flags") or [])
    marks = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in KEY_FLAGS)
    return f"{machine.get('cpu_model') or 'unknown CPU'}; {marks}; {machine.get('usable_cores')} cores"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory, versions, threads, date."""
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "memory_gib": _memory_gib(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def area_result(
    *,
    command: str,
    columns: list[tuple[str, str]],
    rows: list[dict[str, Any]],
    goals: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """One area's results in the JSON schema that make_benchmarks_md.py renders.

    `columns` are (row key, table header) pairs; `goals` are dicts made by `goal()`.
    """
    for row in rows:
        row.setdefault("command", command)
    return {
        "status": "ok",
        "command": command,
        "columns": [list(c) for c in columns] + [["command", "Command"]],
        "rows": rows,
        "goals": goals or [],
        "notes": notes or [],
    }


def not_available(reason: str, command: str) -> dict[str, Any]:
    """An area that could not run because a piece it measures is missing."""
    return {"status": "not available", "reason": reason, "command": command, "rows": [], "goals": []}


def goal(name: str, target: str, measured: float | None, passed: bool | None, unit: str = "") -> dict[str, Any]:
    """A pass/fail goal; `passed` None means not measured in this run (e.g. --quick sizes)."""
    return {"goal": name, "target": target, "measured": measured, "unit": unit, "passed": passed}


@dataclass
class Context:
    """What every area's `run(ctx)` receives: the run mode and the results measured so far."""

    quick: bool
    warmup: int
    repeats: int
    command_prefix: str = "pixelwise bench"
    results: dict[str, Any] | None = None
    log: Callable[[str], None] = print

    def command(self, area: str) -> str:
        """The exact command that reproduces an area's rows."""
        return f"{self.command_prefix} --only {area}" + (" --quick" if self.quick else "")

    def earlier(self, area: str) -> dict[str, Any] | None:
        """Results of an area already run in this invocation, if it ran and succeeded."""
        found = (self.results or {}).get(area)
        return found if found and found.get("status") == "ok" else None


def make_context(quick: bool, **kwargs: Any) -> Context:
    """Quick mode: 1 warm-up and 3 timed runs; full mode: 2 warm-ups and 7 timed runs."""
    return Context(quick=quick, warmup=1 if quick else 2, repeats=3 if quick else 7, **kwargs)
