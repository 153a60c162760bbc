"""Gradient-flow diagnostics: the size of ``dL/dh_t`` at every timestep.

BPTT carries the gradient from step ``t`` to step ``t - 1`` through the recurrent Jacobian
``diag(act'(a_t)) W_hh``. Over many steps the product shrinks towards zero (vanishing gradients:
the early inputs stop influencing learning) or grows without bound (exploding gradients). These
functions show it: the mean norm ``||dL/dh_t||`` over a batch's sequences at each timestep,
computed with the reference engine, and a plot of it.
"""
import numpy as np

from . import reference
from ._validation import as_float_array, as_lengths
from .layers import Recurrent


def hidden_gradient_norms(layer, x, dy=None, dstate=None, state=None, lengths=None):
    """Mean norm of ``dL/dh_t`` at every timestep, for given upstream gradients.

    Parameters
    ----------
    layer : RNN, LSTM or GRU
    x : array_like, shape (batch, timesteps, input_size)
    dy : array_like, shape like the layer's output, optional
        Gradient of the loss with respect to the output sequence.
    dstate : optional
        Gradient with respect to the final state (``(dh, dc)`` for an LSTM).
    state : optional
        Initial state, as for a layer call.
    lengths : array_like of int, optional

    Returns
    -------
    ndarray, shape (num_layers * num_directions, timesteps)
        Row ``layer * num_directions + direction``: at each step ``t`` the mean over the
        sequences that have a step ``t`` of ``||dL/dh_t||_2``.
    """
    if not isinstance(layer, Recurrent):
        raise TypeError(f"layer must be an RNN, LSTM or GRU, got {type(layer).__name__}")
    x = as_float_array("x", x, layer.dtype, (None, None, layer.input_size))
    batch, timesteps, _ = x.shape
    lengths = as_lengths(lengths, batch, timesteps)
    h0, c0 = layer.check_state(state, batch)
    if dy is not None:
        dy = as_float_array("dy", dy, layer.dtype,
                            (batch, timesteps, layer.num_directions * layer.state_size))
    dh_n, dc_n = layer.check_dstate(dstate, batch)
    if dy is None and dh_n is None and dc_n is None:
        raise ValueError("hidden_gradient_norms() needs dy or dstate; both are None")
    _, _, _, cache = reference.forward(layer.cell, x, layer.parameters(), h0, c0, lengths,
                                       num_layers=layer.num_layers,
                                       bidirectional=layer.bidirectional)
    grads = {}
    reference.backward(cache, dy, dh_n, dc_n, hidden_grads=grads)
    valid = np.ones((batch, timesteps)) if lengths is None else \
        (np.arange(timesteps) < lengths[:, None])
    counts = np.maximum(valid.sum(axis=0), 1)
    norms = np.zeros((layer.num_layers * layer.num_directions, timesteps))
    for (k, d), g in grads.items():
        norms[k * layer.num_directions + d] = (np.linalg.norm(g, axis=2) * valid).sum(0) / counts
    return norms


def gradient_norms(model, X, y, lengths=None, loss=None):
    """``||dL/dh_t||`` at every timestep for each recurrent layer of a model, on one batch.

    Parameters
    ----------
    model : Sequential
    X, y : array_like
        A batch of inputs and targets, as for ``fit``.
    lengths : array_like of int, optional
    loss : str or loss object, optional
        Default: the model's loss from ``fit``.

    Returns
    -------
    dict of int to ndarray
        Layer index -> array of shape (num_layers * num_directions, timesteps), as returned by
        :func:`hidden_gradient_norms`.
    """
    trace = model.trace(X, y, lengths=lengths, loss=loss)   # one forward and backward pass
    result = {}
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Recurrent):
            continue
        g = trace.output_grads[i]      # dL/d(the layer's output)
        if layer.return_sequences:
            result[i] = hidden_gradient_norms(layer, trace.inputs[i], dy=g, lengths=trace.lengths)
        else:                          # the output is the final state of the last layer
            result[i] = hidden_gradient_norms(layer, trace.inputs[i],
                                              dstate=layer.final_state_grad(g),
                                              lengths=trace.lengths)
    return result


def plot_gradient_norms(path, norms, title="gradient norm ||dL/dh_t|| (log10)"):
    """Write a PNG of ``log10 ||dL/dh_t||`` against the timestep, one line per series.

    Drawn by :func:`fastrnn.plot.line_plot`, which needs matplotlib
    (``pip install fastrnn[plot]``).

    Parameters
    ----------
    path : str or os.PathLike
    norms : dict of str to array_like
        Label -> norms over the timesteps (e.g. a row of :func:`hidden_gradient_norms`).
    title : str

    Raises
    ------
    ImportError
        If matplotlib is not installed (the message says ``pip install fastrnn[plot]``).
    """
    from .plot import line_plot

    series = {label: list(np.log10(np.maximum(np.asarray(v, float), 1e-300)))
              for label, v in norms.items()}
    line_plot(path, series, title=title, xlabel="timestep t", ylabel="log10 norm")
