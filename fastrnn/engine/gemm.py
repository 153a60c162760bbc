"""The engine's GEMM for the dense parts of BPTT and of the model layers, on its own kernel and
threads (one thread pool for the whole training step: no BLAS threads spinning beside it)."""
import numpy as np

from . import _compiled, runtime

__all__ = ["matmul", "bmm", "SWAP_MAX_N"]

#: ``matmul(a, b, trans_a=True)`` computes ``(b.T @ a).T`` when b has at most this many columns
SWAP_MAX_N = 128


def matmul(a, b, trans_a=False, a2=None, out=None, trans_b=False):
    """``op(a) @ op(b)`` on the engine's own kernel and threads (``op(a)`` is ``a.T`` if
    ``trans_a``, ``op(b)`` is ``b.T`` if ``trans_b``).

    ``a``, ``b``: 2-D arrays of one dtype (float32 or float64) with unit column stride (rows may
    be strided, e.g. column slices).  Returns a new C-contiguous array, or ``out`` (unit column
    stride, the product's shape) with the product added to it.  Used by BPTT for its large
    GEMMs over all timesteps, and by the model layers for theirs, so that they run at the FMA
    rate of our kernels and on the engine's threads (no second thread pool spinning beside
    ours).  With ``a2`` (``trans_a`` only, same rows as ``a``): ``[a | a2].T @ b``, both
    products on one packing of ``b``.  The result's bits do not depend on the thread count.
    """
    nthreads = runtime.get_num_threads()
    if out is not None:
        _compiled.gemm(a, b, out, bool(trans_a), nthreads, a2, True, bool(trans_b))
        return out
    n = b.shape[0] if trans_b else b.shape[1]
    if a2 is not None:
        out = np.empty((a.shape[1] + a2.shape[1], n), dtype=a.dtype)
        _compiled.gemm(a, b, out, True, nthreads, a2, False, bool(trans_b))
        return out
    if trans_a and not trans_b and b.shape[1] <= SWAP_MAX_N and b.shape[1] < a.shape[1] \
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
    out = np.empty((m, n), dtype=a.dtype)
    _compiled.gemm(a, b, out, bool(trans_a), nthreads, None, False, bool(trans_b))
    return out


def bmm(a, b, trans_a=False, trans_b=False, out=None):
    """``op(a[..., :, :]) @ op(b[..., :, :])`` over one or two leading axes, on the engine's
    threads (the products split between them).

    ``a``, ``b``: 3-D or 4-D arrays of one dtype with the same leading shape and a unit stride
    along the last axis (any other strides: strided views such as attention's heads need no
    copy). Returns a new array, or ``out`` (unit last stride) with the products written into
    it.
    """
    if a.ndim != b.ndim or a.ndim not in (3, 4):
        raise ValueError(f"bmm: 3-D or 4-D operands of equal rank, got {a.ndim}-D and "
                         f"{b.ndim}-D")
    m = a.shape[-1] if trans_a else a.shape[-2]
    n = b.shape[-2] if trans_b else b.shape[-1]
    if out is None:
        out = np.empty(a.shape[:-2] + (m, n), dtype=a.dtype)
    a4, b4, c4 = (x[None] if x.ndim == 3 else x for x in (a, b, out))
    _compiled.bmm(a4, b4, c4, bool(trans_a), bool(trans_b), runtime.get_num_threads())
    return out
