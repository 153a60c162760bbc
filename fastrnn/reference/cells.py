"""One timestep of each recurrent cell, forward and backward, in plain NumPy.

Every cell works on a batch of rows: ``x`` is ``(batch, input_size)``, ``h`` and ``c`` are
``(batch, hidden_size)``. Weights follow PyTorch's layout, so ``x @ w_ih.T`` is the input
projection of all gates at once. A cell's ``forward`` returns the new state and a ``cache`` of
what its ``backward`` needs; ``backward`` takes the gradient of the loss with respect to the new
state and returns the gradients with respect to the input, the previous state and the four
parameters ``(w_ih, w_hh, b_ih, b_hh)``.

Recurrent dropout (Gal and Ghahramani, 2016): a cell given a mask ``m`` (``(batch,
hidden_size)``, zeros and ``1 / (1 - p)``, the same at every step of a sequence) feeds
``h * m`` to ``W_hh`` instead of ``h``; everything else reads ``h`` itself (the GRU's
``z * h``, the LSTM's cell state).

The code is the specification: it is written to read like the equations, not to be fast.
"""
import numpy as np

from ..cell_table import GATES, LEAKY_RELU_SLOPE  # noqa: F401  (GATES re-exported)


def sigmoid(a):
    """Logistic function ``1 / (1 + exp(-a))``, written with ``tanh`` so it never overflows."""
    return 0.5 * np.tanh(0.5 * a) + 0.5


def affine(x, w, b):
    """``x @ w.T + b``, with ``b`` optional (``None`` when the layer has no bias)."""
    out = x @ w.T
    if b is not None:
        out += b
    return out


def _bias_grad(da, b):
    return None if b is None else da.sum(axis=0)


def _recurrent_input(h, m):
    """What ``W_hh`` reads: ``h``, or ``h * m`` under recurrent dropout."""
    return h if m is None else h * m


def _through_mask(dh, m):
    """The gradient on ``h`` of the gradient ``dh`` on the recurrent input ``h * m``."""
    return dh if m is None else dh * m


# ----------------------------------------------------------------------------------- vanilla RNN

def _activation(a, nonlinearity):
    """The vanilla RNN's ``act(a)``: tanh, relu, or leaky relu (slope ``LEAKY_RELU_SLOPE``
    below 0)."""
    if nonlinearity == "tanh":
        return np.tanh(a)
    if nonlinearity == "relu":
        return np.maximum(a, 0)
    return np.where(a < 0, LEAKY_RELU_SLOPE * a, a)


def _activation_grad(h_new, nonlinearity):
    """``act'(a)`` from the output ``h' = act(a)``."""
    if nonlinearity == "tanh":
        return 1 - h_new**2               # tanh'(a) = 1 - tanh(a)^2
    if nonlinearity == "relu":
        return h_new > 0                  # relu'(a) = 1 where a > 0
    return np.where(h_new > 0, 1.0, LEAKY_RELU_SLOPE).astype(h_new.dtype)


def rnn_forward(x, h, c, params, nonlinearity, m=None):
    """Vanilla RNN cell: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, ``act`` tanh, relu or
    leaky relu.

    ``c`` is unused (the vanilla cell has no cell state) and returned as ``None``; ``m`` is the
    recurrent dropout mask (or None).
    """
    w_ih, w_hh, b_ih, b_hh = params
    hr = _recurrent_input(h, m)
    a = affine(x, w_ih, b_ih) + affine(hr, w_hh, b_hh)
    h_new = _activation(a, nonlinearity)
    return h_new, None, (x, hr, m, h_new)


def rnn_backward(dh_new, dc_new, cache, params, nonlinearity):
    """Backward of :func:`rnn_forward`: ``da = dh' * act'(a)``, then the chain rule through ``a``."""
    w_ih, w_hh, b_ih, b_hh = params
    x, hr, m, h_new = cache
    da = dh_new * _activation_grad(h_new, nonlinearity)
    dx = da @ w_ih
    dh = _through_mask(da @ w_hh, m)
    grads = (da.T @ x, da.T @ hr, _bias_grad(da, b_ih), _bias_grad(da, b_hh))
    return dx, dh, None, grads


# ------------------------------------------------------------------------------------------ LSTM

def lstm_forward(x, h, c, params, m=None):
    """LSTM cell with PyTorch's gate order ``i, f, g, o`` (``m``: recurrent dropout mask)::

        [a_i, a_f, a_g, a_o] = x W_ih^T + b_ih + h W_hh^T + b_hh
        i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
        c' = f * c + i * g
        h' = o * tanh(c')
    """
    w_ih, w_hh, b_ih, b_hh = params
    hr = _recurrent_input(h, m)
    a_i, a_f, a_g, a_o = np.split(affine(x, w_ih, b_ih) + affine(hr, w_hh, b_hh), 4, axis=1)
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
    c_new = f * c + i * g
    tanh_c = np.tanh(c_new)
    h_new = o * tanh_c
    return h_new, c_new, (x, hr, m, c, i, f, g, o, tanh_c)


def lstm_peephole_forward(x, h, c, params, m=None):
    """LSTM with peepholes (Gers and Schmidhuber, 2000; ONNX's and TensorFlow's): the input and
    forget gates also read ``c``, the output gate ``c'``, through diagonal weights ``p``
    (``params[4]``, ``(3 * hidden,)``: ``p_i, p_f, p_o``)::

        i = sigmoid(a_i + p_i * c)   f = sigmoid(a_f + p_f * c)   g = tanh(a_g)
        c' = f * c + i * g
        o = sigmoid(a_o + p_o * c')
        h' = o * tanh(c')
    """
    w_ih, w_hh, b_ih, b_hh, p = params
    p_i, p_f, p_o = np.split(p, 3)
    hr = _recurrent_input(h, m)
    a_i, a_f, a_g, a_o = np.split(affine(x, w_ih, b_ih) + affine(hr, w_hh, b_hh), 4, axis=1)
    i, f, g = sigmoid(a_i + p_i * c), sigmoid(a_f + p_f * c), np.tanh(a_g)
    c_new = f * c + i * g
    o = sigmoid(a_o + p_o * c_new)
    tanh_c = np.tanh(c_new)
    h_new = o * tanh_c
    return h_new, c_new, (x, hr, m, c, i, f, g, o, tanh_c, c_new)


def lstm_peephole_backward(dh_new, dc_new, cache, params):
    """Backward of :func:`lstm_peephole_forward`: as the LSTM's, with the peepholes' paths
    from ``c'`` to ``o`` and from ``c`` to ``i`` and ``f``."""
    w_ih, w_hh, b_ih, b_hh, p = params
    p_i, p_f, p_o = np.split(p, 3)
    x, hr, m, c, i, f, g, o, tanh_c, c_new = cache
    da_o = dh_new * tanh_c * o * (1 - o)
    dc = dc_new + dh_new * o * (1 - tanh_c**2) + da_o * p_o
    da_i, da_f, da_g = dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g**2)
    dc_prev = dc * f + da_i * p_i + da_f * p_f
    da = np.concatenate([da_i, da_f, da_g, da_o], axis=1)
    dx = da @ w_ih
    dh = _through_mask(da @ w_hh, m)
    dp = np.concatenate([(da_i * c).sum(axis=0), (da_f * c).sum(axis=0),
                         (da_o * c_new).sum(axis=0)])
    grads = (da.T @ x, da.T @ hr, _bias_grad(da, b_ih), _bias_grad(da, b_hh), dp)
    return dx, dh, dc_prev, grads


def lstm_backward(dh_new, dc_new, cache, params):
    """Backward of :func:`lstm_forward`.

    The gradient reaching ``c'`` comes from the next step (``dc_new``) and through
    ``h' = o * tanh(c')``; each gate's pre-activation gradient is its output gradient times
    the derivative of its activation (``s (1 - s)`` for a sigmoid, ``1 - t^2`` for tanh).
    """
    w_ih, w_hh, b_ih, b_hh = params
    x, hr, m, c, i, f, g, o, tanh_c = cache
    do = dh_new * tanh_c
    dc = dc_new + dh_new * o * (1 - tanh_c**2)
    di, df, dg = dc * g, dc * c, dc * i
    dc_prev = dc * f
    da = np.concatenate(
        [di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=1
    )
    dx = da @ w_ih
    dh = _through_mask(da @ w_hh, m)
    grads = (da.T @ x, da.T @ hr, _bias_grad(da, b_ih), _bias_grad(da, b_hh))
    return dx, dh, dc_prev, grads


# ------------------------------------------------------------------------------------------- GRU

def gru_forward(x, h, c, params, m=None):
    """GRU cell with PyTorch's gate order ``r, z, n`` (the "linear before reset" form; under
    recurrent dropout ``h W_hh^T`` reads ``h * m``, ``z * h`` reads ``h``)::

        [x_r, x_z, x_n] = x W_ih^T + b_ih        [h_r, h_z, h_n] = h W_hh^T + b_hh
        r = sigmoid(x_r + h_r)   z = sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)
        h' = (1 - z) * n + z * h
    """
    w_ih, w_hh, b_ih, b_hh = params
    x_r, x_z, x_n = np.split(affine(x, w_ih, b_ih), 3, axis=1)
    hr = _recurrent_input(h, m)
    h_r, h_z, h_n = np.split(affine(hr, w_hh, b_hh), 3, axis=1)
    r = sigmoid(x_r + h_r)
    z = sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    h_new = (1 - z) * n + z * h
    return h_new, None, (x, h, hr, m, r, z, n, h_n)


def gru_backward(dh_new, dc_new, cache, params):
    """Backward of :func:`gru_forward`.

    The reset gate multiplies ``h_n`` only, so the recurrent pre-activation gradient of the
    ``n`` block is ``dn_pre * r`` while the input one is ``dn_pre``.
    """
    w_ih, w_hh, b_ih, b_hh = params
    x, h, hr, m, r, z, n, h_n = cache
    dn_pre = dh_new * (1 - z) * (1 - n**2)
    dz_pre = dh_new * (h - n) * z * (1 - z)
    dr_pre = dn_pre * h_n * r * (1 - r)
    da_x = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    da_h = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
    dx = da_x @ w_ih
    dh = dh_new * z + _through_mask(da_h @ w_hh, m)
    grads = (da_x.T @ x, da_h.T @ hr, _bias_grad(da_x, b_ih), _bias_grad(da_h, b_hh))
    return dx, dh, None, grads


def gru_reset_before_forward(x, h, c, params, m=None):
    """The GRU of Cho et al. (2014), whose reset gate acts before ``W_hn`` (Keras'
    ``reset_after=False``, ONNX's ``linear_before_reset=0``); PyTorch's parameters::

        r = sigmoid(x_r + h W_hr^T + b_hr)   z = sigmoid(x_z + h W_hz^T + b_hz)
        n = tanh(x_n + (r * h) W_hn^T + b_hn)
        h' = (1 - z) * n + z * h
    """
    w_ih, w_hh, b_ih, b_hh = params
    H = h.shape[1]
    x_r, x_z, x_n = np.split(affine(x, w_ih, b_ih), 3, axis=1)
    hr = _recurrent_input(h, m)
    h_r, h_z = np.split(affine(hr, w_hh[:2 * H], None if b_hh is None else b_hh[:2 * H]), 2,
                        axis=1)
    r = sigmoid(x_r + h_r)
    z = sigmoid(x_z + h_z)
    rh = r * hr
    n = np.tanh(x_n + affine(rh, w_hh[2 * H:], None if b_hh is None else b_hh[2 * H:]))
    h_new = (1 - z) * n + z * h
    return h_new, None, (x, h, hr, m, r, z, n, rh)


def gru_reset_before_backward(dh_new, dc_new, cache, params):
    """Backward of :func:`gru_reset_before_forward`: the gradient reaches ``r`` through
    ``(r * h) W_hn^T``, and ``h`` through ``z * h``, ``r * h`` and ``W_hr``, ``W_hz``."""
    w_ih, w_hh, b_ih, b_hh = params
    x, h, hr, m, r, z, n, rh = cache
    H = h.shape[1]
    dn_pre = dh_new * (1 - z) * (1 - n**2)
    dz_pre = dh_new * (h - n) * z * (1 - z)
    drh = dn_pre @ w_hh[2 * H:]
    dr_pre = drh * hr * r * (1 - r)
    da = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    dx = da @ w_ih
    dhr = np.concatenate([dr_pre, dz_pre], axis=1) @ w_hh[:2 * H] + drh * r
    dh = dh_new * z + _through_mask(dhr, m)
    dw_hh = np.concatenate([da[:, :2 * H].T @ hr, dn_pre.T @ rh])
    grads = (da.T @ x, dw_hh, _bias_grad(da, b_ih), _bias_grad(da, b_hh))
    return dx, dh, None, grads


# -------------------------------------------------------------------------- LSTM projection

def projected(cell):
    """The ``(forward, backward)`` of ``cell`` (the LSTM's) with a projection, PyTorch's
    ``proj_size``: the cell's output ``m = o * tanh(c')`` (``H`` units) is projected to the
    state ``h'`` (``P`` units) by ``W_hr`` (``params[-1]``, ``(P, H)``), and ``W_hh`` reads
    ``h`` (``(4H, P)``); ``c`` keeps its ``H`` units::

        h' = m W_hr^T
    """
    cell_forward, cell_backward = cell

    def forward(x, h, c, params, m=None):
        w_hr = params[-1]
        out, c_new, cache = cell_forward(x, h, c, params[:-1], m)
        return out @ w_hr.T, c_new, (cache, out)

    def backward(dh_new, dc_new, cache, params):
        w_hr = params[-1]
        cell_cache, out = cache
        dx, dh, dc_prev, grads = cell_backward(dh_new @ w_hr, dc_new, cell_cache, params[:-1])
        return dx, dh, dc_prev, grads + (dh_new.T @ out,)

    return forward, backward


def _rnn_cell(nonlinearity):
    def forward(x, h, c, params, m=None):
        return rnn_forward(x, h, c, params, nonlinearity, m)

    def backward(dh_new, dc_new, cache, params):
        return rnn_backward(dh_new, dc_new, cache, params, nonlinearity)

    return forward, backward


#: ``cell name -> (forward, backward)``; the names every part of fastrnn uses for the cells.
CELLS = {
    "rnn_tanh": _rnn_cell("tanh"),
    "rnn_relu": _rnn_cell("relu"),
    "rnn_leaky_relu": _rnn_cell("leaky_relu"),
    "lstm": (lstm_forward, lstm_backward),
    "lstm_peephole": (lstm_peephole_forward, lstm_peephole_backward),
    "gru_reset_before": (gru_reset_before_forward, gru_reset_before_backward),
    "gru": (gru_forward, gru_backward),
}

