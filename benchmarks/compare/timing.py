"""Timing: calibration (calls per sample), the interleaved round-robin sampler, the pass under
load, and the budgets of a full and a ``--quick`` run."""
from __future__ import annotations

import contextlib
import gc
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Optional

from .contenders import Runner

# In the sustained pass (--sustained, --load) every sample follows this much untimed work of
# the same contender: the steady state of sustained work (serving, training), which a busy
# neighbour also disturbs.
SUSTAINED_WARM_S = 0.15


@dataclass(frozen=True)
class Plan:
    """How long a run samples: per row ``budget`` seconds of rounds (``min_reps`` to
    ``max_reps``), samples of ``target`` seconds; the GEMM ceiling at ``sgemm_n``^3, best of
    ``sgemm_reps``; the reference's samples and its longest call; in --quick, the deadline past
    which rows are timed by their check call alone."""

    budget: float
    min_reps: int
    max_reps: int
    target: float
    sgemm_n: int
    sgemm_reps: int
    ref_samples: int
    ref_max_call: float
    quick_deadline: Optional[float]


QUICK = Plan(1.0, 3, 15, 0.002, 1024, 5, 2, 0.05, 60.0)
FULL = Plan(12.0, 7, 400, 0.005, 2048, 7, 5, 5.0, None)


def _sample(r: Runner, rewarm: bool = False, warm_s: float = 0.0) -> float:
    with r.ctx():
        if rewarm:
            r.run()   # untimed: wakes the contender's threads and caches after a pause
        t_warm = time.perf_counter()
        while time.perf_counter() - t_warm < warm_s:
            r.run()   # untimed: the contender in its steady state (the sustained pass)
        t0 = time.perf_counter()
        for _ in range(r.number):
            r.run()
        t1 = time.perf_counter()
    return (t1 - t0) / r.number


def _calibrate(r: Runner, target_sample_s: float) -> float:
    """Set ``r.number`` (like timeit's autorange) so that one sample lasts the target; returns
    the duration of one sample."""
    r.number = 1
    if r.check_time is not None and r.check_time / r.check_calls >= target_sample_s:
        return r.check_time / r.check_calls  # a slow call: one call per sample
    while True:
        t = _sample(r) * r.number
        if t >= target_sample_s or r.number >= 100000:
            return t
        r.number = min(100000, max(r.number * 2, int(r.number * target_sample_s / max(t, 1e-9) * 0.5)))


def _rounds(per_round: float, budget_s: float, min_reps: int, max_reps: int) -> int:
    """Rounds that fit the budget: at least ``min_reps`` when that costs at most twice the
    budget; for slow calls a median of 3 when that stays within 4 budgets, else one round."""
    per_round = per_round or 1e-6
    if min_reps * per_round <= 2 * budget_s:
        lo = min_reps
    else:
        lo = min(min_reps, 3) if 3 * per_round <= 4 * budget_s else 1
    return int(max(lo, min(max_reps, budget_s / per_round)))


def time_runners(runners: list, budget_s: float, min_reps: int, max_reps: int,
                 target_sample_s: float, repeat: Optional[int], gap_s: float = 0.0,
                 warm_s: float = 0.0) -> None:
    """Calibrate, then take samples round-robin; fills ``runner.samples``.

    Every runner has been warmed up by its correctness check.  The number of rounds fits the
    ``budget_s`` (see ``_rounds``), unless ``repeat`` fixes it; ``repeat=0`` takes the check call
    as the only sample.
    ``gap_s``: a pause before each sample, so that the previous contender's idle threads (OpenMP
    and OpenBLAS workers spin-wait for a while after their work) stop competing for the cores;
    after it, one untimed call before the timed ones (a call right after a pause is 2-3x slower
    on these VMs, for every contender: that measured the wake-up, not the steady state).
    ``warm_s``: before each sample, untimed calls for that long (the steady state of sustained
    work: the sustained pass).
    """
    if repeat == 0:
        for r in runners:
            r.number = 1
            r.samples.append(r.check_time / r.check_calls)
        return
    main = [r for r in runners if r.max_samples is None]
    capped = [r for r in runners if r.max_samples is not None]
    # time per round of the contenders that sample every round (the capped reference aside)
    per_round = sum(_calibrate(r, target_sample_s) + gap_s + warm_s for r in main)
    reps = repeat or _rounds(per_round, budget_s, min_reps, max_reps)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(reps if main else 0):
            k = i % len(main)
            for r in main[k:] + main[:k]:
                if gap_s:
                    time.sleep(gap_s)
                r.samples.append(_sample(r, rewarm=bool(gap_s), warm_s=warm_s))
        # The capped (reference) contenders after the others: NumPy's OpenBLAS threads spin for a
        # while after each matmul and would slow down whoever ran next.
        for r in capped:
            _calibrate(r, target_sample_s)
            for _ in range(min(reps, r.max_samples)):
                r.samples.append(_sample(r))
    finally:
        if gc_was:
            gc.enable()


@contextlib.contextmanager
def busy_processes(n: int):
    """``n`` processes spinning on the CPU for the duration of the block (``--load``); after
    them, a wait for fastrnn's switch to one thread under contention to run out, so that the
    next row's unloaded samples do not inherit it."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)   # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        if n:
            time.sleep(_contention_hold())


def _contention_hold() -> float:
    """How long fastrnn's engine stays on one thread after it last saw contention (0 without
    the compiled engine)."""
    try:
        from fastrnn.engine import _compiled
    except ImportError:
        return 0.0
    return float(getattr(_compiled, "CONTENDED_HOLD", 0.0))


def statistic(name: str):
    """The statistic of ``--stat``: median or min."""
    return statistics.median if name == "median" else min


def _stats(runners: list, stat) -> dict:
    return {r.name: (stat(r.samples) if r.samples else None) for r in runners}


def time_row(name: str, runners: list, plan: Plan, args, late: bool, failures: list) -> tuple:
    """Sample a row's contenders; returns their times (``args.stat``) and, with
    ``--sustained`` (or ``--load``), the times of the sustained pass, and with ``--load`` those
    of the same pass beside busy processes, and the means of both passes' samples (a mean
    counts the slow calls that a median hides: what a stream of requests sees): (times,
    sustained, loaded, {"sustained": means, "loaded": means}).  A crash while timing is added
    to ``failures``.  In --quick past the deadline (``late``): one sample each, the check
    call."""
    try:
        time_runners(runners, plan.budget, plan.min_reps, plan.max_reps, plan.target,
                     0 if late else args.repeat, args.gap)
    except Exception as exc:
        failures.append(f"{name}: crashed while timing: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
    stat = statistic(args.stat)
    sustained, loaded = {}, {}
    means = {"sustained": {}, "loaded": {}}
    passes = [(0, sustained, means["sustained"], "")] if args.sustained else []
    if args.load:
        passes.append((args.load, loaded, means["loaded"], " under load"))
    if passes and not late and runners:
        kept = {r.name: r.samples for r in runners}
        for busy, into, into_mean, what in passes:
            try:
                _time_sustained(runners, plan, args, stat, busy, into, into_mean)
            except Exception as exc:
                failures.append(f"{name}: crashed while timing sustained calls{what}: "
                                f"{type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
        for r in runners:
            r.samples = kept[r.name]
    return _stats(runners, stat), sustained, loaded, means


def _time_sustained(runners: list, plan: Plan, args, stat, busy: int, into: dict,
                    into_mean: dict) -> None:
    """The contenders in sustained calls (each sample after ``SUSTAINED_WARM_S`` of untimed
    calls), beside ``busy`` busy processes: fills ``into`` with their times (``stat``) and
    ``into_mean`` with the means of their samples."""
    for r in runners:
        r.samples = []
    with busy_processes(busy):
        time_runners(runners, plan.budget, plan.min_reps, plan.max_reps, plan.target,
                     args.repeat, args.gap, warm_s=SUSTAINED_WARM_S)
    into.update(_stats(runners, stat))
    into_mean.update(_stats(runners, statistics.mean))
