"""One row of the comparison: its contenders prepared, checked against the oracle, timed."""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from typing import Optional

from .configs import Config, make_weights
from .contenders import compare_outputs, fastrnn_name, fastrnn_runner, torch_runner, Unavailable
from .onnx_contender import onnx_runner
from .timing import Plan, time_row


@dataclass
class Session:
    """What every row of a run shares: the arguments, the plan, the contenders available."""

    args: object
    plan: Plan
    skip: set
    fastrnn: object
    fr_na: dict           # fastrnn backend -> why n/a
    isas: list            # instruction sets fastrnn runs on (first: the 'fastrnn' column)
    torch: object
    ort: object
    na_global: dict       # peer -> why n/a
    can_train: bool
    train_reason: str
    tmpdir: str
    t_start: float


def _add(runners: list, na: dict, failures: list, s: Session, cfg: Config, name: str, factory) -> None:
    """Prepare contender ``name`` (``factory()``) unless skipped or unavailable; a crash while
    preparing is a failure."""
    if name in s.skip:
        na[name] = "skipped"
        return
    if name in s.na_global:
        na[name] = s.na_global[name]
        return
    try:
        runners.append(factory())
    except Unavailable as exc:
        na[name] = str(exc)
    except NotImplementedError as exc:
        na[name] = f"NotImplementedError: {exc}"
    except Exception as exc:
        na[name] = f"CRASH while preparing: {type(exc).__name__}: {exc}"
        failures.append(f"{cfg.name}/{name}: crashed while preparing: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)


def _fastrnn_unavailable(s: Session, cfg: Config, name: str, backend: str) -> Optional[str]:
    if s.fastrnn is None or backend in s.fr_na:
        return s.fr_na.get(backend, "fastrnn not importable")
    if cfg.mode.startswith("train") and not s.can_train:
        return s.train_reason
    if name == "ref" and not cfg.small:
        return "too slow here (the reference runs on the small configurations only)"
    return None


def prepare(cfg: Config, s: Session, failures: list) -> tuple:
    """The row's contenders: (runners, {name: why n/a})."""
    weights = make_weights(cfg)
    runners, na = [], {}

    def add(name, factory):
        _add(runners, na, failures, s, cfg, name, factory)

    for name, backend in (("fastrnn", "compiled"), ("ref", "reference")):
        why = _fastrnn_unavailable(s, cfg, name, backend)
        if why is not None:
            na[name] = why
        elif name == "fastrnn" and s.isas:
            for isa in s.isas:
                nm = fastrnn_name(s.isas, isa)
                add(nm, lambda b=backend, n=nm, i=isa: fastrnn_runner(s.fastrnn, cfg, b, weights, n, i))
        else:
            add(name, lambda b=backend, n=name: fastrnn_runner(s.fastrnn, cfg, b, weights, n))
    if s.torch is not None:
        add("torch", lambda: torch_runner(s.torch, cfg, weights))
    if s.ort is not None:
        add("onnx", lambda: onnx_runner(s.torch, s.ort, cfg, weights, s.tmpdir, s.args.threads))
    return runners, na


def check(cfg: Config, runners: list, na: dict, failures: list) -> Optional[str]:
    """Run every contender's check (its warm-up, timed) and compare it with the oracle (torch,
    else the reference); drops crashed and wrong contenders.  Returns the oracle's name."""
    oracle = next((r.name for r in runners if r.name == "torch"), None) or \
        next((r.name for r in runners if r.name == "ref"), None)
    results = {}
    for r in list(runners):
        try:
            t0 = time.perf_counter()
            with r.ctx():
                results[r.name] = r.check()
            r.check_time = time.perf_counter() - t0
        except NotImplementedError as exc:
            na[r.name] = f"NotImplementedError: {exc}"
            runners.remove(r)
        except Exception as exc:
            na[r.name] = f"CRASH: {type(exc).__name__}: {exc}"
            failures.append(f"{cfg.name}/{r.name}: crashed: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            runners.remove(r)
    if oracle in results:
        for r in list(runners):
            if r.name == oracle or not r.checked:
                continue
            why = compare_outputs(results[r.name], results[oracle])
            if why:
                failures.append(f"{cfg.name}/{r.name} disagrees with {oracle}: {why}")
                na[r.name] = f"WRONG vs {oracle}"
                runners.remove(r)
    return oracle


def limit_reference(runners: list, na: dict, plan: Plan, repeat: Optional[int]) -> None:
    """The slow NumPy reference: few samples, and only where one call is cheap."""
    for r in list(runners):
        if r.name != "ref":
            continue
        dt = r.check_time / r.check_calls
        if dt > plan.ref_max_call:
            runners.remove(r)
            na["ref"] = f"skipped (one call {dt:.2f}s)"
        else:
            r.max_samples = plan.ref_samples if not repeat else min(repeat, plan.ref_samples)


def run_config(cfg: Config, s: Session, failures: list) -> dict:
    """Prepare, check and time one row; returns what the report needs of it: runners, n/a
    reasons, oracle, times (``--stat``), times in sustained calls alone and under load, the
    means of those two passes' samples, and whether it was late."""
    runners, na = prepare(cfg, s, failures)
    oracle = check(cfg, runners, na, failures)
    if any(r.name == "ref" for r in runners):
        time.sleep(0.2)  # the reference's matmuls leave OpenBLAS workers spinning for a while
    limit_reference(runners, na, s.plan, s.args.repeat)
    # in --quick, past the deadline: one sample each, to finish in CI's time
    late = bool(s.args.quick and time.perf_counter() - s.t_start > s.plan.quick_deadline)
    times, sustained, loaded, means = time_row(cfg.name, runners, s.plan, s.args, late,
                                               failures)
    return dict(runners=runners, na=na, oracle=oracle, times=times, sustained=sustained,
                loaded=loaded, means=means, late=late)
