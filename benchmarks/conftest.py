"""Shared setup of the pytest-benchmark suite: its rows and contenders are the comparison's
(``compare.configs``, ``compare.contenders``); pytest-benchmark does the timing.

Picks the fastrnn backend once: ``compiled`` when it works, else ``reference`` (then only the
small configurations run). Set ``FASTRNN_BENCH_BACKEND=reference`` (or ``compiled``) to force one.
The compiled backend's benchmarks run once per instruction set this CPU can run (``kernels``).
"""
import os

import numpy as np
import pytest

from compare import configs, contenders
from compare.engine import engine


@pytest.fixture(scope="session")
def fastrnn_backend():
    """``(fastrnn module, backend name)``; skips everything when fastrnn does not import."""
    fastrnn, na = contenders.fastrnn_backends()
    if fastrnn is None:
        pytest.skip(na.get("compiled", "fastrnn not importable"))
    forced = os.environ.get("FASTRNN_BENCH_BACKEND")
    if forced:
        if forced in na:
            pytest.skip(f"FASTRNN_BENCH_BACKEND={forced}: {na[forced]}")
        return fastrnn, forced
    for backend in ("compiled", "reference"):
        if backend not in na:
            return fastrnn, backend
    pytest.skip(f"no fastrnn backend works: {na}")


def _runnable_isas():
    eng = engine()
    return eng.supported_isas() if eng is not None else [None]


@pytest.fixture(params=_runnable_isas())
def kernels(request, fastrnn_backend):
    """The instruction set whose kernels the benchmark runs on (forced through the
    dispatcher by the runner), or None for the reference backend (which runs once)."""
    _, backend = fastrnn_backend
    if backend != "compiled" or request.param is None:
        if request.param != _runnable_isas()[0]:
            pytest.skip("the reference backend has no instruction sets")
        return None
    return request.param


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def fastrnn_contender(fastrnn_backend, kernels):
    """``make(cfg)``: the comparison's fastrnn runner of a row on this backend and these kernels,
    checked against PyTorch (when installed) before any timing; skips where it cannot run."""
    fastrnn, backend = fastrnn_backend

    def make(cfg):
        if backend == "reference" and not cfg.small:
            pytest.skip(f"{cfg.name}: too slow for the NumPy reference (no compiled backend)")
        if cfg.mode.startswith("train"):
            ok, reason = contenders.fastrnn_can_train(fastrnn, backend)
            if not ok:
                pytest.skip(reason)
        name = f"fastrnn[{backend}{' ' + kernels if kernels else ''}]"
        try:
            runner = contenders.fastrnn_runner(fastrnn, cfg, backend, configs.make_weights(cfg),
                                               name, kernels)
        except contenders.Unavailable as exc:
            pytest.skip(str(exc))
        _check_against_torch(cfg, runner)
        return runner, dict(backend=backend, kernels=kernels)

    return make


def _check_against_torch(cfg, runner):
    """The runner's outputs (gradients for training) are finite and, with PyTorch installed,
    PyTorch's, as the comparison checks them."""
    with runner.ctx():
        got = runner.check()
    assert all(np.all(np.isfinite(v)) for v in got.values())
    try:
        import torch
    except ImportError:
        return
    oracle = contenders.torch_runner(torch, cfg, configs.make_weights(cfg))
    with oracle.ctx():
        want = oracle.check()
    err = contenders.compare_outputs(got, want)
    assert err is None, err


@pytest.fixture
def timed(benchmark):
    """``timed(cfg, runner, **info)``: pytest-benchmark times ``runner.run`` (inside its context:
    instruction set, ``inference_mode``), grouped by row, named after the contender."""
    def run(cfg, runner, **info):
        benchmark.group = cfg.name
        benchmark.name = f"{cfg.name} {runner.name}"
        benchmark.extra_info.update(config=cfg.describe(), flops=cfg.flops(), **info)
        with runner.ctx():
            return benchmark(runner.run)

    return run


@pytest.fixture
def torch_contender(torch):
    """``make(cfg)``: the comparison's PyTorch runner of a row."""
    return lambda cfg: contenders.torch_runner(torch, cfg, configs.make_weights(cfg))
