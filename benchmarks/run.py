#!/usr/bin/env python
"""durable's benchmarks, side by side with plain Python and with duravoke, in one run.

    python benchmarks/run.py            # full run (~30 s on a quiet machine), writes results/latest.json
    python benchmarks/run.py --quick    # tiny sizes: checks that everything runs, numbers mean little
    python benchmarks/run.py --profile calls   # cProfile of the per-call hot path instead

See benchmarks/README.md for what each row measures and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import gc
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

import durable  # noqa: E402
from durable import (  # noqa: E402
    DurableBackend,
    InMemoryStateStore,
    PauseForEventException,
    make_durable,
)

try:
    import cryptography  # noqa: F401  (what AesGcmCodec needs: the `encryption` extra)

    from durable.stores.encryption import AesGcmCodec
except ImportError:  # not installed: the encryption row is reported as skipped
    AesGcmCodec = None  # type: ignore[assignment,misc]

try:
    from duravoke import Duravoke, InMemoryKKV, JSONSerializer
except ImportError:  # the `bench` extra is not installed: duravoke rows are reported as skipped
    Duravoke = InMemoryKKV = JSONSerializer = None  # type: ignore[assignment,misc]

DEFAULT_JSON = HERE / "results" / "latest.json"
BENCH_KEY = "the benchmark's key, never a real one"
NOISY = 1.25  # a time row whose median exceeds its min by more than this is flagged


@dataclasses.dataclass(frozen=True)
class Config:
    cpu_n: int = 5_000  # loop iterations of workloads.cpu_work
    cpu_inner: int = 5  # instances per timed repetition
    trivial_inner: int = 200
    calls_n: int = 1_000  # durable calls in workloads.call_loop
    resume_small: int = 10
    resume_large: int = 10_000
    resume_inner: int = 4  # durable resumes timed per repetition (after one untimed)
    duravoke_resume_reps: int = 5
    cached_inner: int = 1_000  # make_durable calls per repetition once compiled
    reps: int = 15
    resume_reps: int = 7
    compile_reps: int = 7
    warmup: int = 2


FULL = Config()
QUICK = Config(cpu_n=200, cpu_inner=1, trivial_inner=3, calls_n=20, resume_small=10,
               resume_large=100, resume_inner=1, duravoke_resume_reps=2, cached_inner=10,
               reps=2, resume_reps=2, compile_reps=2, warmup=1)


# Measuring.

@dataclasses.dataclass
class Sample:
    """Seconds per operation, one value per timed repetition."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)


def paired_ratio(a: Sample, b: Sample) -> float:
    """Median over repetitions of a/b: variants are interleaved, so each repetition's pair ran
    under the same machine conditions, which makes this steadier than a ratio of medians."""
    return statistics.median(x / y for x, y in zip(a.times, b.times, strict=True))


def paired_difference(a: Sample, b: Sample) -> float:
    return statistics.median(x - y for x, y in zip(a.times, b.times, strict=True))


Prepare = Callable[[int], Awaitable[list[Any]]]
Op = Callable[[Any], Awaitable[Any]]


async def _no_setup(count: int) -> list[Any]:
    return [None] * count


async def measure(variants: dict[str, tuple[Op, Prepare]], *, reps: int, warmup: int,
                  inner: int = 1, untimed_first: bool = False) -> dict[str, Sample]:
    """Time each variant ``inner`` times per repetition, variants interleaved within a repetition
    (so a slow phase of the machine hits all of them). ``prepare(count)`` runs untimed before
    each timed batch and returns the argument of each ``op`` call. With ``untimed_first`` one
    more operation runs untimed just before the batch, so caches that the (possibly large)
    preparation evicted are warm again for every variant alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(warmup + reps):
        for name, (op, prepare) in variants.items():
            arguments = await prepare(inner + untimed_first)
            gc.collect()
            if untimed_first:
                await op(arguments.pop(0))
            start = time.perf_counter()
            for argument in arguments:
                await op(argument)
            elapsed = time.perf_counter() - start
            if rep >= warmup:
                times[name].append(elapsed / inner)
    return {name: Sample(values) for name, values in times.items()}


def measure_sync(op: Callable[[Any], Any], prepare: Callable[[], Any], *, reps: int, warmup: int,
                 inner: int = 1) -> Sample:
    times = []
    for rep in range(warmup + reps):
        argument = prepare()
        gc.collect()
        start = time.perf_counter()
        for _ in range(inner):
            op(argument)
        elapsed = time.perf_counter() - start
        if rep >= warmup:
            times.append(elapsed / inner)
    return Sample(times)


# Rows of the report.

@dataclasses.dataclass
class Row:
    id: str
    label: str
    median: float | None  # in ``unit``
    min: float | None
    unit: str
    target: str = ""
    ok: bool | None = None  # None: informational, no target
    note: str = ""


def time_row(row_id: str, label: str, sample: Sample, unit: str = "µs") -> Row:
    scale = {"µs": 1e6, "ms": 1e3, "s": 1.0}[unit]
    row = Row(row_id, label, sample.median * scale, sample.min * scale, unit)
    if sample.min > 0 and sample.median / sample.min > NOISY:
        row.note = f"noisy (median/min {sample.median / sample.min:.1f})"
    return row


def skipped(row_id: str, label: str, why: str) -> Row:
    return Row(row_id, label, None, None, "", note=f"skipped: {why}")


def check(row: Row, limit: float) -> Row:
    row.target = f"≤ {limit:g}{'x' if row.unit == 'x' else ' ' + row.unit}"
    row.ok = row.median is not None and row.median <= limit
    return row


_ids = itertools.count()


def new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def expect(what: str, got: Any, wanted: Any) -> None:
    if got != wanted:
        raise AssertionError(f"{what}: got {got!r}, expected {wanted!r}")


# 1. A function that never suspends.

async def bench_cpu(cfg: Config) -> list[Row]:
    cpu = make_durable(workloads.cpu_work)
    trivial = make_durable(workloads.trivial)
    n = cfg.cpu_n

    backend = DurableBackend(InMemoryStateStore())
    wanted = await workloads.cpu_work(n)
    expect("durable cpu_work", await cpu(n, orchestration_backend=backend, instance_id="check"),
           wanted)

    def durable_variant(program: Any, *args: Any) -> tuple[Op, Prepare]:
        backend = DurableBackend(InMemoryStateStore())

        async def prepare(count: int) -> list[Any]:
            return [new_id("i") for _ in range(count)]

        def op(instance_id: str) -> Awaitable[Any]:
            return program(*args, orchestration_backend=backend, instance_id=instance_id)

        return op, prepare

    loop = await measure({
        "plain": (lambda _: workloads.cpu_work(n), _no_setup),
        "durable": durable_variant(cpu, n),
    }, reps=cfg.reps, warmup=cfg.warmup, inner=cfg.cpu_inner)
    fixed = await measure({
        "plain": (lambda _: workloads.trivial(), _no_setup),
        "durable": durable_variant(trivial),
    }, reps=cfg.reps, warmup=cfg.warmup, inner=cfg.trivial_inner)

    ratio = Row("1c", "cpu loop: durable / plain", paired_ratio(loop["durable"], loop["plain"]),
                loop["durable"].min / loop["plain"].min, "x")
    overhead = Row("1f", "fixed per-instance overhead (durable - plain, trivial fn)",
                   paired_difference(fixed["durable"], fixed["plain"]) * 1e6,
                   (fixed["durable"].min - fixed["plain"].min) * 1e6, "µs",
                   note="start + first save + completion save, in memory")
    body_only = loop["durable"].median - paired_difference(fixed["durable"], fixed["plain"])
    return [
        time_row("1a", f"cpu loop, plain async (n={n} iterations)", loop["plain"]),
        time_row("1b", "cpu loop, durable (one instance, in memory)", loop["durable"]),
        check(ratio, 1.3),
        time_row("1d", "trivial fn, plain async", fixed["plain"]),
        time_row("1e", "trivial fn, durable (one instance)", fixed["durable"]),
        overhead,
        Row("1g", "cpu loop ratio without the fixed overhead",
            body_only / loop["plain"].median, None, "x",
            note="(1b - 1f) / 1a: speed of the block itself"),
    ]


# 2. Overhead per durable call.

async def bench_calls(cfg: Config) -> list[Row]:
    program = make_durable(workloads.call_loop)
    n = cfg.calls_n
    wanted = await workloads.call_loop(n)
    expect("durable call_loop", await program(
        n, orchestration_backend=DurableBackend(InMemoryStateStore()), instance_id="check"), wanted)

    async def durable_prepare(count: int) -> list[Any]:
        return [new_id("calls") for _ in range(count)]

    def on(store: InMemoryStateStore) -> Op:
        backend = DurableBackend(store)
        return lambda instance_id: program(n, orchestration_backend=backend,
                                           instance_id=instance_id)

    variants: dict[str, tuple[Op, Prepare]] = {
        "plain": (lambda _: workloads.call_loop(n), _no_setup),
        "durable": (on(InMemoryStateStore()), durable_prepare),
        # What SQLite and PostgreSQL always do, and the memory store with a key given.
        "signed": (on(InMemoryStateStore(secret_key=BENCH_KEY)), durable_prepare),
    }
    if AesGcmCodec is not None:
        variants["encrypted"] = (on(InMemoryStateStore(
            secret_key=BENCH_KEY, codec=AesGcmCodec(AesGcmCodec.new_key()))), durable_prepare)
    if Duravoke is not None:
        root = workloads.duravoke_call_loop(Duravoke(InMemoryKKV(), JSONSerializer()))
        expect("duravoke call_loop", await root(n), wanted)

        async def duravoke_prepare(count: int) -> list[Any]:
            # A root call's result is cached under its arguments: a fresh store per instance.
            return [workloads.duravoke_call_loop(Duravoke(InMemoryKKV(), JSONSerializer()))
                    for _ in range(count)]

        variants["duravoke"] = (lambda root: root(n), duravoke_prepare)

    samples = await measure(variants, reps=cfg.reps, warmup=cfg.warmup)
    plain = samples["plain"]

    def per_call(name: str) -> Row:
        sample = samples[name]
        return Row("", "", paired_difference(sample, plain) / n * 1e6,
                   (sample.min - plain.min) / n * 1e6, "µs")

    rows = [
        time_row("2a", f"call loop, plain async (n={n} awaited helper calls)", plain, "ms"),
        time_row("2b", "call loop, durable (InMemoryStateStore, save after each call)",
                 samples["durable"], "ms"),
    ]
    durable_row = per_call("durable")
    durable_row.id, durable_row.label = "2d", "durable: overhead per durable call ((2b - 2a) / n)"
    if "duravoke" in samples:
        rows.append(time_row("2c", "call loop, duravoke (InMemoryKKV + JSONSerializer)",
                             samples["duravoke"], "ms"))
        rows.append(check(durable_row, 20))
        duravoke_row = per_call("duravoke")
        duravoke_row.id, duravoke_row.label = "2e", "duravoke: overhead per call ((2c - 2a) / n)"
        duravoke_row.note = "about 17 µs measured before"
        rows.append(duravoke_row)
    else:
        rows.append(skipped("2c", "call loop, duravoke", "duravoke not installed"))
        rows.append(check(durable_row, 20))
        rows.append(skipped("2e", "duravoke: overhead per call", "duravoke not installed"))
    signing = paired_difference(samples["signed"], samples["durable"]) / n * 1e6
    rows.append(Row("2f", "signing: cost per durable call (HMAC-SHA256 of each saved state)",
                    signing, (samples["signed"].min - samples["durable"].min) / n * 1e6, "µs",
                    note=f"{signing / durable_row.median:.1%} of 2d"))
    if "encrypted" in samples:
        encryption = paired_difference(samples["encrypted"], samples["signed"]) / n * 1e6
        rows.append(Row("2g", "encryption: cost per durable call (AES-256-GCM, beside signing)",
                        encryption, (samples["encrypted"].min - samples["signed"].min) / n * 1e6,
                        "µs", note=f"{encryption / durable_row.median:.1%} of 2d"))
    else:
        rows.append(skipped("2g", "encryption: cost per durable call", "cryptography not installed"))
    return rows


# 3. Resume cost after few and after many completed calls.

async def bench_resume(cfg: Config) -> list[Row]:
    program = make_durable(workloads.calls_then_pause)
    store = InMemoryStateStore()
    small, large = cfg.resume_small, cfg.resume_large

    def durable_variant(k: int) -> tuple[Op, Prepare]:
        async def prepare(count: int) -> list[Any]:
            instances = []
            for _ in range(count):
                instance_id = new_id(f"resume{k}")
                backend = DurableBackend(store)
                try:
                    await program(k, orchestration_backend=backend, instance_id=instance_id)
                except PauseForEventException:
                    pass
                else:
                    raise AssertionError("calls_then_pause did not pause")
                backend.publish_event(instance_id, "go")
                # A new backend on the same store: as a new process would resume it.
                instances.append((DurableBackend(store), instance_id))
            return instances

        wanted = sum(range(k)) + 1  # not computed inside the timed call

        async def op(instance: tuple[DurableBackend, str]) -> None:
            backend, instance_id = instance
            expect("resumed calls_then_pause",
                   await program(k, orchestration_backend=backend, instance_id=instance_id),
                   wanted)

        return op, prepare

    def duravoke_variant(k: int) -> tuple[Op, Prepare]:
        async def prepare(count: int) -> list[Any]:
            instances = []
            for _ in range(count):
                kv = InMemoryKKV()
                first = workloads.duravoke_calls_then_pause(Duravoke(kv, JSONSerializer()),
                                                            {"pause": True})
                try:
                    await first(k)
                except workloads.Paused:
                    pass
                else:
                    raise AssertionError("duravoke calls_then_pause did not stop")
                # Its "resume" is a new run of the function over the same store.
                instances.append(workloads.duravoke_calls_then_pause(
                    Duravoke(kv, JSONSerializer()), {"pause": False}))
            return instances

        wanted = sum(range(k)) + 1

        async def op(root: Any) -> None:
            expect("duravoke rerun", await root(k), wanted)

        return op, prepare

    # Each batch: prepare, then one untimed resume (the first operation after the preparation
    # and gc.collect() runs several times slower whatever K is), then ``inner`` timed resumes.
    samples = await measure(
        {f"durable{small}": durable_variant(small), f"durable{large}": durable_variant(large)},
        reps=cfg.resume_reps, warmup=1, inner=cfg.resume_inner, untimed_first=True)
    if Duravoke is not None:  # one timed re-run per batch: a K=10,000 re-run takes ~0.3 s
        samples.update(await measure(
            {f"duravoke{small}": duravoke_variant(small),
             f"duravoke{large}": duravoke_variant(large)},
            reps=cfg.duravoke_resume_reps, warmup=1, inner=1, untimed_first=True))

    def ratio(row_id: str, label: str, name: str) -> Row:
        return Row(row_id, label, paired_ratio(samples[f"{name}{large}"], samples[f"{name}{small}"]),
                   samples[f"{name}{large}"].min / samples[f"{name}{small}"].min, "x")

    rows = [
        time_row("3a", f"durable resume after K={small} calls (load + event + finish)",
                 samples[f"durable{small}"]),
        time_row("3b", f"durable resume after K={large} calls", samples[f"durable{large}"]),
        check(ratio("3c", f"durable resume ratio K={large} / K={small}", "durable"), 1.3),
    ]
    if Duravoke is not None:
        rows += [
            time_row("3d", f"duravoke re-run after K={small} calls (replays them from its store)",
                     samples[f"duravoke{small}"]),
            time_row("3e", f"duravoke re-run after K={large} calls", samples[f"duravoke{large}"],
                     "ms"),
            ratio("3f", f"duravoke resume ratio K={large} / K={small}", "duravoke"),
        ]
    else:
        rows += [skipped(i, f"duravoke {what}", "duravoke not installed")
                 for i, what in (("3d", "re-run K small"), ("3e", "re-run K large"),
                                 ("3f", "resume ratio"))]
    return rows


# 4. Compile time.

def bench_compile(cfg: Config) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="durable-bench-compile-") as directory:
        modules: list[Any] = []

        def fresh_module() -> Any:
            """A new file and module each time, with a different constant: nothing cached."""
            name = f"bench_medium_{uuid.uuid4().hex}"
            path = Path(directory) / f"{name}.py"
            source = workloads.MEDIUM_MODULE.format(salt=len(modules) + 1)
            path.write_text(source)
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            make_durable(module.fetch)  # its awaited helper: compiled first, untimed
            modules.append(module)
            return module

        first = measure_sync(lambda module: make_durable(module.medium), fresh_module,
                             reps=cfg.compile_reps, warmup=cfg.warmup)
        module = modules[-1]
        cached = measure_sync(lambda module: make_durable(module.medium), lambda: module,
                              reps=cfg.reps, warmup=cfg.warmup, inner=cfg.cached_inner)
        source = workloads.MEDIUM_MODULE.format(salt=1)
        builtin = measure_sync(lambda text: compile(text, "<medium>", "exec"), lambda: source,
                               reps=cfg.reps, warmup=cfg.warmup, inner=10)

        program = make_durable(module.medium)
        lines = _source_lines(module.medium)
        blocks = len(getattr(getattr(program, "function", None), "blocks", ()))
        for module in modules:
            sys.modules.pop(module.__name__, None)
    return [
        _noted(time_row("4a", f"make_durable, first time (medium fn: {lines} lines, "
                               f"{blocks} blocks)", first, "ms"),
               "fresh module each time; its awaited helper compiled before, untimed"),
        time_row("4b", "make_durable, cached (same function again)", cached, "µs"),
        time_row("4c", "for scale: builtin compile() of the whole module source", builtin, "ms"),
    ]


def _noted(row: Row, note: str) -> Row:
    row.note = f"{row.note}; {note}" if row.note else note
    return row


def _source_lines(fn: Any) -> int:
    import inspect

    return len(inspect.getsourcelines(fn)[0])


# Environment, output.

def environment() -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "durable")
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "durable": getattr(durable, "__version__", version("durable")),
        "durable_commit": (commit + (" (durable/ modified)" if dirty else "")) if commit else None,
        "duravoke": version("duravoke"),
        "cloudpickle": version("cloudpickle"),
        "libcst": version("libcst"),
    }


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    text = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}" if abs(value) >= 1000 else f"{value:.1f}"
    return f"{text}x" if unit == "x" else f"{text} {unit}"


def render(rows: list[Row]) -> str:
    header = ("#", "measurement", "median", "min", "target", "")
    lines = [(r.id, r.label, _number(r.median, r.unit), _number(r.min, r.unit), r.target,
              {True: "ok", False: "MISSED", None: ""}[r.ok] + (f"  {r.note}" if r.note else ""))
             for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(5)]
    out = []
    for line in [header, *lines]:
        cells = [str(line[0]).ljust(widths[0]), str(line[1]).ljust(widths[1]),
                 str(line[2]).rjust(widths[2]), str(line[3]).rjust(widths[3]),
                 str(line[4]).ljust(widths[4]), line[5]]
        out.append("  ".join(cells).rstrip())
        if line is header:
            out.append("-" * len(out[0]))
    return "\n".join(out)


async def run_all(cfg: Config) -> list[Row]:
    rows = []
    for section in (bench_cpu, bench_calls, bench_resume):
        print(f"running {section.__name__} ...", file=sys.stderr, flush=True)
        rows += await section(cfg)
    print("running bench_compile ...", file=sys.stderr, flush=True)
    rows += bench_compile(cfg)
    return rows


# Profiling the hot paths.

async def profile(which: str, cfg: Config, top: int) -> None:
    store = InMemoryStateStore()
    backend = DurableBackend(store)
    if which == "calls":
        program, args, count = make_durable(workloads.call_loop), (cfg.calls_n,), 20
    elif which == "trivial":
        program, args, count = make_durable(workloads.trivial), (), 5_000
    elif which == "resume":
        program, args, count = make_durable(workloads.calls_then_pause), (cfg.resume_small,), 2_000
    else:
        program, args, count = make_durable(workloads.cpu_work), (cfg.cpu_n,), 50
    ids = [new_id("profile") for _ in range(count + 1)]
    if which == "resume":  # profile only the resumes: start and pause every instance first
        for instance_id in ids:
            with contextlib.suppress(PauseForEventException):
                await program(*args, orchestration_backend=backend, instance_id=instance_id)
            backend.publish_event(instance_id, "go")
    await program(*args, orchestration_backend=backend, instance_id=ids.pop())  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    for instance_id in ids:
        await program(*args, orchestration_backend=backend, instance_id=instance_id)
    profiler.disable()

    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"cProfile of {count} durable instances of {program.qualname}{args}: "
          f"{total * 1e3:.1f} ms under the profiler (profiling inflates small calls)\n")
    package = str(Path(durable.__file__).resolve().parent)
    by_file: dict[str, float] = {}
    entries = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = _short(filename, package)
        by_file[where] = by_file.get(where, 0.0) + tottime
        entries.append((tottime, cumtime, calls, f"{where}:{line}({name})"))
    print(f"own time by file (share of {total * 1e3:.1f} ms):")
    for where, seconds in sorted(by_file.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {seconds / total:6.1%}  {where}")
    per = {"calls": "call", "resume": "resume"}.get(which, "instance")
    units = count * (cfg.calls_n if which == "calls" else 1)
    print(f"\ntop {top} functions by own time (µs per {per} = own time / {units}):")
    print(f"  {'own':>7}  {'cum':>7}  {'ncalls':>8}  {'µs/' + per:>10}  function")
    for tottime, cumtime, calls, label in sorted(entries, reverse=True)[:top]:
        print(f"  {tottime / total:7.1%}  {cumtime / total:7.1%}  {calls:8d}  "
              f"{tottime / units * 1e6:10.2f}  {label}")
    print("\ncumulative time of durable's own functions:")
    mine = [(cum, label, calls) for _, cum, calls, label in entries if label.startswith("durable/")]
    for cum, label, calls in sorted(mine, reverse=True)[:top]:
        print(f"  {cum / total:7.1%}  {calls:8d}  {label}")


def _short(filename: str, package: str) -> str:
    if filename.startswith(package):
        return "durable" + filename[len(package):]
    if filename == "~":
        return "<builtins>"
    parts = Path(filename).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else filename


def main(argv: list[str] | None = None) -> int:
    os.environ.pop("DURABLE_SECRET_KEY", None)  # the defaults of a fresh machine (row 2b)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO)})")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--profile", choices=("calls", "trivial", "resume", "cpu"),
                        help="instead of benchmarking, cProfile one workload and print the top costs")
    parser.add_argument("--top", type=int, default=25, help="rows of --profile output")
    options = parser.parse_args(argv)
    cfg = QUICK if options.quick else FULL

    if options.profile:
        asyncio.run(profile(options.profile, cfg, options.top))
        return 0

    env = environment()
    started = time.perf_counter()
    rows = asyncio.run(run_all(cfg))
    elapsed = time.perf_counter() - started
    if options.quick:  # sizes too small for the targets to mean anything
        for row in rows:
            if row.ok is not None:
                row.ok, row.note = None, "not judged in quick mode"

    print(f"Python {env['python']} ({env['implementation']}) on {env['platform']}, "
          f"{env['cpu']}, {env['cpu_count']} CPUs ({env['cpus_usable']} usable), "
          f"load {env['load_average']}")
    print(f"durable {env['durable']} ({env['durable_commit']}), duravoke {env['duravoke']}, "
          f"cloudpickle {env['cloudpickle']}, libcst {env['libcst']}")
    print(f"mode: {'quick (numbers not meaningful)' if options.quick else 'full'}; "
          f"median and min over repetitions, per operation; took {elapsed:.1f} s")
    load = env["load_average"]
    if load and env["cpus_usable"] and load[0] >= 0.5 * env["cpus_usable"]:
        print(f"WARNING: the machine was busy (load {load[0]:.2f} on {env['cpus_usable']} CPUs "
              "when the run started): medians are inflated; compare mins, or rerun when it is quiet")
    print()
    print(render(rows))

    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps({
        "mode": "quick" if options.quick else "full",
        "config": dataclasses.asdict(cfg),
        "environment": env,
        "rows": [dataclasses.asdict(r) for r in rows],
        "targets_missed": [r.id for r in rows if r.ok is False],
        "seconds": elapsed,
    }, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {options.json}")
    missed = [r.id for r in rows if r.ok is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 1 if options.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
