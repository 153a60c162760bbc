"""The model layers on the engine: their matrix products on the engine's GEMM (:func:`matmul`,
:func:`linear`, :func:`bmm`, with NumPy's where the engine is missing), and the training
passes of the attention and normalization layers on the Numba kernels of
:mod:`fastrnn.engine.layer_kernels` (imported on the first call here, which imports Numba):
arrays allocated and made contiguous, the rows split over the engine's OpenMP team
(``_compiled.run_on_team``, as the BPTT's kernels are) when :data:`USE_TEAM`.  Every part of
a training step then runs on one thread pool.

Private: ``Dense``, ``TransformerEncoderLayer``, :class:`fastrnn.layers.CrossAttention`
(compiled backend), :class:`fastrnn.LayerNorm` and :class:`fastrnn.MultiHeadAttention` call
these; the kernels when :func:`available`, their NumPy formulas being what the tests hold
these to.
"""
import numpy as np

from . import _compiled, runtime
if _compiled is not None:
    from . import gemm

_kernels = None

#: below this many elements of work per thread, one thread does all: starting the team's calls
#: costs 30-130 us (each thread takes the GIL to enter its Numba kernel; AVX2-only Zen 4),
#: as much as a layer norm of 2048 x 128 takes on one thread (0.2 ms)
MIN_WORK_PER_THREAD = 1 << 19


def available():
    """True if the compiled engine is there (Numba comes with fastrnn)."""
    return _compiled is not None


def kernels():
    """The kernel module (its first import imports Numba)."""
    global _kernels
    if _kernels is None:
        from . import layer_kernels
        _kernels = layer_kernels
    return _kernels


#: split the rows over the engine's team (else every kernel runs on the calling thread).  It
#: pays once the layers' products run on the engine too (:func:`matmul`): A1, a
#: sequence-to-sequence training step with attention, 38.8 -> 26.5 ms on two threads (AVX2-only
#: Zen 4).  Between NumPy's products, whose OpenBLAS threads spin meanwhile, it made A2's step
#: 3x slower.
USE_TEAM = True


def _threads(rows, work_per_row):
    """How many threads of the team to give ``rows`` rows of ``work_per_row`` each."""
    if not USE_TEAM:
        return 1
    return max(1, min(runtime.get_num_threads(), rows,
                      rows * work_per_row // MIN_WORK_PER_THREAD))


def _on_team(calls):
    """``calls[i]()`` on thread ``i`` of the team (on this thread if there is one call)."""
    if len(calls) == 1:
        calls[0]()
    else:
        _compiled.run_on_team(calls)


def _blocks(rows, threads):
    """``threads`` contiguous ``(r0, r1)`` blocks of ``rows`` rows."""
    edges = [rows * i // threads for i in range(threads + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _run(kernel, rows, work_per_row, *args):
    """``kernel(r0, r1, *args)`` over ``rows`` rows, in contiguous blocks, one per thread of the
    engine's team (as many as the work fills)."""
    _on_team([lambda r0=r0, r1=r1: kernel(r0, r1, *args)
              for r0, r1 in _blocks(rows, _threads(rows, work_per_row))])


def _c(a):
    return np.ascontiguousarray(a)


# ----------------------------------------------------------------------------------------------
# Products: the engine's GEMM (its threads, no BLAS pool beside them) or NumPy's
# ----------------------------------------------------------------------------------------------

def _on_engine(*arrays):
    """True if the engine's GEMM takes these arrays (compiled engine, one float dtype)."""
    dtype = arrays[0].dtype
    return (available() and dtype in (np.float32, np.float64)
            and all(a.dtype == dtype for a in arrays))


def _operand(a, trans):
    """``(array, trans)`` with a unit stride along the last axis and the same ``op(a)``: a
    transposed view is taken as its base with ``trans`` flipped, anything else copied."""
    if a.strides[-1] == a.itemsize:
        return a, trans
    if a.strides[-2] == a.itemsize and a.shape[-2] > 1:
        return a.swapaxes(-1, -2), not trans
    return np.ascontiguousarray(a), trans


def matmul(a, b, trans_a=False, trans_b=False, out=None):
    """``op(a) @ op(b)`` of 2-D arrays (``op(x)`` is ``x.T`` when ``trans_x``), into ``out``
    if given (overwritten).

    On the engine's GEMM when it is there (:func:`available`): the model layers' products then
    run on the same threads as the recurrent layers, where NumPy's would wake OpenBLAS's
    threads, which spin beside the engine's and slow both (a sequence-to-sequence training
    step with attention ran 1.5x slower on two threads than on one).
    """
    if not _on_engine(a, b):
        return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
    a, trans_a = _operand(a, trans_a)
    b, trans_b = _operand(b, trans_b)
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    if out is None:
        out = np.empty((m, n), a.dtype)
    elif out.strides[-1] != out.itemsize:
        out[...] = matmul(a, b, trans_a, trans_b)
        return out
    _compiled.gemm(a, b, out, trans_a, runtime.get_num_threads(), None, False, trans_b)
    return out


def linear(x, weight, bias=None, out=None):
    """``x @ weight.T + bias`` over the last axis of ``x`` (any leading axes: one GEMM over all
    rows), by :func:`matmul`; ``bias`` None for none.  Into ``out`` (x's leading shape, the
    weight's rows) if given."""
    if out is not None and not out.flags.c_contiguous:     # (its rows are not one matrix)
        out[...] = linear(x, weight, bias)
        return out
    rows = x.reshape(-1, x.shape[-1])
    flat = None if out is None else out.reshape(-1, weight.shape[0])
    y = matmul(rows, weight, trans_b=True, out=flat)
    if bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], weight.shape[0]) if out is None else out


def bmm(a, b, trans_a=False, trans_b=False, out=None):
    """``op(a) @ op(b)`` over one or two leading axes (3-D or 4-D arrays), into ``out`` if
    given (overwritten): the engine's batched GEMM (:func:`fastrnn.engine.gemm.bmm`) or
    ``np.matmul``."""
    if not _on_engine(a, b):
        return np.matmul(a.swapaxes(-1, -2) if trans_a else a,
                         b.swapaxes(-1, -2) if trans_b else b, out=out)
    a, trans_a = _operand(a, trans_a)
    b, trans_b = _operand(b, trans_b)
    if out is not None and out.strides[-1] != out.itemsize:
        out[...] = gemm.bmm(a, b, trans_a, trans_b)
        return out
    return gemm.bmm(a, b, trans_a, trans_b, out=out)


# ----------------------------------------------------------------------------------------------

def additive_scores(projected, keys, v):
    """``scores[b, t, s] = v . tanh(projected[b, t] + keys[b, s])``.

    Parameters
    ----------
    projected : ndarray, shape (batch, query_steps, hidden)
    keys : ndarray, shape (batch, memory_steps, hidden)
    v : ndarray, shape (hidden,)

    Returns
    -------
    ndarray, shape (batch, query_steps, memory_steps)
    """
    projected, keys, v = _c(projected), _c(keys), _c(v)
    batch, tq, h = projected.shape
    scores = np.empty((batch, tq, keys.shape[1]), projected.dtype)
    _run(kernels().additive_scores, batch, tq * keys.shape[1] * h, projected, keys, v, scores)
    return scores


def additive_backward(projected, keys, v, dscores):
    """Gradients of :func:`additive_scores` given ``dscores`` (its output's gradient).

    Returns
    -------
    dprojected : ndarray, shape of ``projected``
    dkeys : ndarray, shape of ``keys``
    dv : ndarray, shape (hidden,)
    """
    projected, keys, v, dscores = _c(projected), _c(keys), _c(v), _c(dscores)
    batch, tq, h = projected.shape
    dprojected = np.empty_like(projected)
    dkeys = np.empty_like(keys)
    blocks = _blocks(batch, _threads(batch, tq * keys.shape[1] * h))
    dv = np.zeros((len(blocks), h))      # one row a thread (float64), summed below
    kernel = kernels().additive_backward
    _on_team([lambda i=i, r0=r0, r1=r1: kernel(r0, r1, projected, keys, v, dscores,
                                                dprojected, dkeys, dv[i])
              for i, (r0, r1) in enumerate(blocks)])
    return dprojected, dkeys, dv.sum(axis=0).astype(projected.dtype)


def layer_norm_forward(x, x2, weight, bias, eps):
    """``xhat`` (normalized), ``rstd`` (1 / the standard deviation of each row) and ``y = xhat *
    weight + bias`` of the rows of ``z = x + x2`` (``x2`` None: ``z = x``).

    Parameters
    ----------
    x, x2 : ndarray, shape (rows, n)
    weight, bias : ndarray, shape (n,)
    eps : float

    Returns
    -------
    xhat : ndarray, shape (rows, n)
    rstd : ndarray, shape (rows,), float64
    y : ndarray, shape (rows, n)
    """
    x = _c(x)
    x2 = np.empty((0, x.shape[1]), x.dtype) if x2 is None else _c(x2)
    xhat, y = np.empty_like(x), np.empty_like(x)
    rstd = np.empty(x.shape[0])
    _run(kernels().layer_norm_forward, x.shape[0], x.shape[1], x, x2, _c(weight), _c(bias),
         float(eps), xhat, rstd, y)
    return xhat, rstd, y


def layer_norm_backward(dy, xhat, rstd, weight):
    """Gradients of :func:`layer_norm_forward`: ``dx`` (of ``z``), ``dweight``, ``dbias``."""
    dy = _c(dy)
    rows, n = dy.shape
    blocks = _blocks(rows, _threads(rows, n))
    dx = np.empty_like(dy)
    dweight = np.zeros((len(blocks), n))
    dbias = np.zeros((len(blocks), n))
    kernel = kernels().layer_norm_backward
    weight = _c(weight)
    _on_team([lambda i=i, r0=r0, r1=r1: kernel(r0, r1, dy, xhat, rstd, weight, dx, dweight[i],
                                                dbias[i])
              for i, (r0, r1) in enumerate(blocks)])
    return dx, dweight.sum(axis=0).astype(dy.dtype), dbias.sum(axis=0).astype(dy.dtype)


_NO_LENGTHS = np.empty(0, np.int64)


def attention_softmax(scores, scale, lengths, causal):
    """In place: the masked softmax of ``scale * scores`` (``(batch, heads, T, T)``, C-contiguous)
    over the keys ``< lengths[b]`` (and ``<= t`` if ``causal``), rows of the padded queries 0
    (see :func:`layer_kernels.attention_softmax`).

    Returns
    -------
    ndarray
        ``scores``.
    """
    batch, heads, t, tk = scores.shape
    lengths = _NO_LENGTHS if lengths is None else np.ascontiguousarray(lengths, np.int64)
    _run(kernels().attention_softmax, batch * heads, t * tk, scores, float(scale), lengths,
         bool(causal))
    return scores


def attention_softmax_backward(dweights, weights, scale):
    """In place: ``dweights = scale * weights * (dweights - rowsum(dweights * weights))``, the
    gradient on the scores of :func:`attention_softmax` (both ``(batch, heads, T, T)``,
    C-contiguous).

    Returns
    -------
    ndarray
        ``dweights``.
    """
    batch, heads, t, tk = dweights.shape
    _run(kernels().attention_softmax_backward, batch * heads * t, tk, dweights, weights,
         float(scale))
    return dweights


def bias_relu(a, bias):
    """In place: ``a = relu(a + bias)`` (``a`` ``(rows, n)`` C-contiguous; ``bias`` None: 0).

    Returns
    -------
    ndarray
        ``a``.
    """
    bias = np.zeros(a.shape[1], a.dtype) if bias is None else _c(bias)
    _run(kernels().bias_relu, a.shape[0], a.shape[1], a, bias)
    return a


def relu_backward(da, a):
    """In place: ``da = da * (a > 0)`` (both ``(rows, n)`` C-contiguous, ``a`` a relu's
    output).

    Returns
    -------
    ndarray
        ``da``.
    """
    _run(kernels().relu_backward, da.shape[0], da.shape[1], da, a)
    return da
