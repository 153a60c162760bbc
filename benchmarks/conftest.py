"""Shared setup for the pytest-benchmark suite.

Picks the fastrnn backend once: ``compiled`` when it works, else ``reference`` (then only the
small configurations run). Set ``FASTRNN_BENCH_BACKEND=reference`` (or ``compiled``) to force one.
The compiled backend's benchmarks run once per instruction set this CPU can run (``kernels``).
"""
import os

import pytest

from fastrnn import bench as compare  # configurations and runners


@pytest.fixture(scope="session")
def fastrnn_backend():
    """``(fastrnn module, backend name)``; skips everything when fastrnn does not import."""
    fastrnn, na = compare.fastrnn_backends()
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
    from fastrnn import engine
    return engine.supported_isas() or [None]


@pytest.fixture(params=_runnable_isas())
def kernels(request, fastrnn_backend):
    """The instruction set whose kernels the benchmark runs on (forced through the
    dispatcher), or None for the reference backend (which runs once)."""
    fastrnn, backend = fastrnn_backend
    if backend != "compiled" or request.param is None:
        if request.param != _runnable_isas()[0]:
            pytest.skip("the reference backend has no instruction sets")
        yield None
        return
    with fastrnn.engine.use_isa(request.param):
        yield request.param
