"""The training passes of the attention and normalization layers on the Numba kernels of
:mod:`fastrnn.engine.layer_kernels` (imported on the first call here, which imports Numba):
arrays allocated and made contiguous, the rows split over the engine's OpenMP team
(``_compiled.run_on_team``, as the BPTT's kernels are) when :data:`USE_TEAM` (off: see there).

Private: :class:`fastrnn.layers.CrossAttention` (compiled backend), :class:`fastrnn.LayerNorm`
and :class:`fastrnn.MultiHeadAttention` call these when :func:`available`; their NumPy
formulas are what the tests hold these to.
"""
import numpy as np

from . import _compiled, runtime

_kernels = None

#: below this many elements of work per thread, one thread does all (a team costs ~10 us)
MIN_WORK_PER_THREAD = 32768


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


#: split the rows over the engine's team (else every kernel runs on the calling thread). Off:
#: measured on the AVX2-only Zen 4 (two threads, A2 = a transformer encoder layer's training
#: step), these short kernels handed to the team between NumPy's GEMMs, whose OpenBLAS threads
#: spin meanwhile, made the step 3x slower (57 ms of CPU against 18.6 ms on one thread)
USE_TEAM = False


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
