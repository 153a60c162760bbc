"""Machine facts of a run: the CPU, its load, and the GEMM ceiling (NumPy's sgemm and fastrnn's
own kernel)."""
from __future__ import annotations

import contextlib
import platform
import time
from typing import Optional

import numpy as np

from .engine import engine


def cpu_model() -> str:
    eng = engine()
    if eng is None:  # the comparison runs without the compiled engine too
        return platform.processor() or platform.machine()
    return eng.cpu_model()


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ",".join(x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if x in flags)
    except OSError:
        pass
    return ""


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _best_rate(matmul, n: int, reps: int) -> float:
    """Best-of-``reps`` rate in GFLOP/s of ``matmul`` on two float32 n x n matrices (after one
    untimed call)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def measure_sgemm(n: int, reps: int) -> float:
    """Best-of-``reps`` NumPy float32 n^3 matmul rate in GFLOP/s (the machine's GEMM ceiling)."""
    c = np.empty((n, n), np.float32)
    return _best_rate(lambda a, b: np.matmul(a, b, out=c), n, reps)


def measure_engine_gemm(fastrnn, n: int, reps: int, isa: Optional[str] = None) -> Optional[float]:
    """Best-of-``reps`` rate of fastrnn's own float32 n^3 GEMM kernel in GFLOP/s, or None.

    NumPy's sgemm is no ceiling where OpenBLAS runs kernels below the machine's vector width
    (``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine: half the FMA rate); the engine's kernel
    is what fastrnn's own GEMMs run at.
    """
    eng = engine() if fastrnn is not None else None
    matmul = getattr(getattr(eng, "gemm", None), "matmul", None)
    if matmul is None:
        return None
    with eng.use_isa(isa) if isa else contextlib.nullcontext():
        return _best_rate(matmul, n, reps)


def engine_config(fastrnn) -> Optional[dict]:
    """fastrnn's engine configuration (kernels in use, compiled, runnable, register tile)."""
    eng = engine() if fastrnn is not None else None
    return eng.config() if hasattr(eng, "config") else None
