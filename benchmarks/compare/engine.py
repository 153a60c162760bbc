"""The harness's one access to fastrnn's engine internals.

Kernel dispatch (``use_isa``), the instruction sets, the build configuration, the CPU's name and
the engine's own GEMM live in a private module of fastrnn; everything of the harness (and of the
pytest-benchmark suite) that needs one of them asks :func:`engine` for that module, so that a move
of the module is a change of ``ENGINE_MODULE`` alone.
"""
from __future__ import annotations

import importlib

ENGINE_MODULE = "fastrnn.engine"


def engine():
    """fastrnn's engine module (``use_isa``, ``isa``, ``supported_isas``, ``config``,
    ``cpu_model``, ``gemm.matmul``), or None when it does not import (no compiled engine)."""
    try:
        module = importlib.import_module(ENGINE_MODULE)
    except ImportError:
        return None
    return module if module.AVAILABLE else None
