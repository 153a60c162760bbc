"""Shared setup for the pytest-benchmark suite.

Makes the package importable from a source checkout (the repository root goes first on
``sys.path`` when it holds ``fastrnn/``) and picks the fastrnn backend once:
``compiled`` when it works, else ``reference`` (then only the small configurations run).
Set ``FASTRNN_BENCH_BACKEND=reference`` (or ``compiled``) to force one.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if os.path.isfile(os.path.join(ROOT, "fastrnn", "__init__.py")) and ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import compare  # noqa: E402  (benchmarks/compare.py: configurations and runners)


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
