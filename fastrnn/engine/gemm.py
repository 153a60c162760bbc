"""The engine's GEMM for the dense parts of BPTT, on its own kernel and threads."""
import numpy as np

from . import _compiled, runtime

__all__ = ["matmul", "SWAP_MAX_N"]

#: ``matmul(a, b, trans_a=True)`` computes ``(b.T @ a).T`` when b has at most this many columns
SWAP_MAX_N = 128


def matmul(a, b, trans_a=False, a2=None, out=None):
    """``a @ b`` (``a.T @ b`` if ``trans_a``) on the engine's own kernel and threads.

    ``a``, ``b``: 2-D arrays of one dtype (float32 or float64) with unit column stride (rows may
    be strided, e.g. column slices).  Returns a new C-contiguous array, or ``out`` (C-contiguous,
    the product's shape) with the product added to it.  Used by BPTT for its large GEMMs over
    all timesteps, so that they run at the FMA rate of our kernels and on the engine's threads
    (no second thread pool spinning beside ours).  With ``a2`` (``trans_a`` only, same rows as
    ``a``): ``[a | a2].T @ b``, both products on one packing of ``b``.
    """
    nthreads = runtime.get_num_threads()
    if out is not None:
        _compiled.gemm(a, b, out, bool(trans_a), nthreads, a2, True)
        return out
    if a2 is not None:
        out = np.empty((a.shape[1] + a2.shape[1], b.shape[1]), dtype=a.dtype)
        _compiled.gemm(a, b, out, True, nthreads, a2)
        return out
    if trans_a and b.shape[1] <= SWAP_MAX_N and b.shape[1] < a.shape[1] \
            and a.shape[0] == b.shape[0]:
        # a.T @ b = (b.T @ a).T: the transposed operand is packed into micro-panels of the
        # tile's rows, at a cost proportional to its size, and b's few columns would fill the
        # column panels (``_compiled.panel_width``: 64 float32 on AVX-512) only partly; then b
        # takes that role.  Measured (AVX-512, 2 threads, float32): 256 x 3200 x 32 from 66 to
        # 246 GFLOP/s; with wide b (512 columns) it loses.
        out_t = np.empty((b.shape[1], a.shape[1]), dtype=a.dtype)
        _compiled.gemm(b, a, out_t, True, nthreads)
        return np.ascontiguousarray(out_t.T)
    m = a.shape[1] if trans_a else a.shape[0]
    out = np.empty((m, b.shape[1]), dtype=a.dtype)
    _compiled.gemm(a, b, out, bool(trans_a), nthreads)
    return out
