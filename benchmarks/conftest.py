"""Shared setup for the pytest-benchmark suite.

Picks the fastrnn backend once: ``compiled`` when it works, else ``reference`` (then only the
small configurations run). Set ``FASTRNN_BENCH_BACKEND=reference`` (or ``compiled``) to force one.
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
