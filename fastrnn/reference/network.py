"""Unrolling through time and backpropagation through time (BPTT), in plain NumPy.

A network is ``num_layers`` stacked recurrent layers, each run in one direction or in both
(bidirectional: the two directions' outputs are concatenated, forward first, and feed the next
layer). Sequences of different lengths share a batch: at timestep ``t`` only the sequences with
``lengths > t`` are computed, so each sequence's final state is the state at its own last step
and its outputs after that are zero. The reverse direction of a sequence starts at its own last
valid step. These are PyTorch's packed-sequence semantics.

Dropout, given as fixed masks (zeros and ``1 / (1 - p)``, drawn by the caller): between stacked
layers (PyTorch's ``dropout=``), each layer's output but the last is multiplied by its mask
before it feeds the next layer; recurrent dropout (Gal and Ghahramani, 2016; Keras'
``recurrent_dropout``) multiplies ``h_{t-1}`` by one mask per sequence, the same at every step,
where ``W_hh`` reads it (see :mod:`fastrnn.reference.cells`).

BPTT walks the same steps backwards: the gradient of the loss with respect to ``h_t`` is the
upstream gradient on the output ``y_t`` plus what flows back from ``h_{t+1}``; each weight's
gradient is summed over every timestep at which the weight was used.
"""
from dataclasses import dataclass, field

import numpy as np

from ..cell_table import cell_spec, parameter_names, peephole_name, projection_name, state_sizes
from .cells import CELLS, projected


def _cell_functions(cell, projection):
    """``(forward, backward)`` of one step of ``cell``, with the LSTM's projection if
    ``projection``."""
    return projected(CELLS[cell]) if projection else CELLS[cell]


def _cell_params(cell, weights, layer, direction):
    """``(w_ih, w_hh, b_ih, b_hh)`` of one layer and direction (and the peepholes of a
    peephole LSTM, then the projection ``W_hr`` of a projected LSTM); biases are ``None`` if
    absent."""
    return tuple(weights.get(name) for name in _param_names(cell, weights, layer, direction))


def _param_names(cell, weights, layer, direction):
    """The names of :func:`_cell_params`' parameters, in their order."""
    names = parameter_names(layer, direction, bias=True)
    if cell_spec(cell).has_peepholes:
        names.append(peephole_name(layer, direction))
    if _projected(weights):
        names.append(projection_name(layer, direction))
    return names


def _projected(weights):
    """True for the weights of an LSTM with a projection (``proj_size > 0``)."""
    return projection_name(0, 0) in weights


def unroll(cell, x, params, h0, c0, lengths, reverse=False, recurrent_mask=None,
           projection=False):
    """Run one recurrent layer in one direction over a batch of sequences.

    Parameters
    ----------
    cell : str
        ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"``.
    x : ndarray, shape (batch, timesteps, input_size)
    params : tuple
        ``(w_ih, w_hh, b_ih, b_hh)``, biases may be ``None`` (then the peepholes, then
        ``W_hr`` with ``projection``).
    h0, c0 : ndarray, shape (batch, hidden_size)
        Initial states (``c0`` is ``None`` unless the cell is an LSTM; with ``projection``
        ``h0`` has ``proj_size`` columns).
    lengths : ndarray of int, shape (batch,)
        Valid timesteps of each sequence.
    reverse : bool
        Walk from each sequence's last valid step down to step 0.
    recurrent_mask : ndarray, shape (batch, hidden_size), optional
        Recurrent dropout: ``W_hh`` reads ``h * recurrent_mask``.
    projection : bool
        An LSTM with a projection (PyTorch's ``proj_size``): ``params[-1]`` is ``W_hr``.

    Returns
    -------
    y : ndarray, shape (batch, timesteps, hidden_size)
        ``h_t`` at every valid step, 0 elsewhere.
    h, c : ndarray, shape (batch, hidden_size)
        Final states (``c`` is ``None`` unless LSTM).
    steps : list
        ``(t, active_rows, cell_cache)`` for each computed step, in the order computed.
    """
    forward_cell, _ = _cell_functions(cell, projection)
    batch, timesteps, _ = x.shape
    h = h0.copy()
    c = None if c0 is None else c0.copy()
    y = np.zeros((batch, timesteps, h.shape[1]), dtype=x.dtype)
    steps = []
    for t in (reversed(range(timesteps)) if reverse else range(timesteps)):
        active = np.flatnonzero(lengths > t)          # sequences that have a step t
        if active.size == 0:
            continue
        h_new, c_new, cache = forward_cell(
            x[active, t], h[active], None if c is None else c[active], params,
            None if recurrent_mask is None else recurrent_mask[active]
        )
        h[active] = h_new
        if c is not None:
            c[active] = c_new
        y[active, t] = h_new
        steps.append((t, active, cache))
    return y, h, c, steps


def unroll_backward(cell, steps, params, x_shape, dy, dh, dc, dh_seq=None, projection=False):
    """BPTT through one layer and direction: the steps of :func:`unroll`, walked backwards.

    Parameters
    ----------
    cell : str
    steps : list
        As returned by :func:`unroll`.
    params : tuple
        ``(w_ih, w_hh, b_ih, b_hh)`` as given to :func:`unroll`.
    x_shape : tuple
        Shape of the layer's input.
    dy : ndarray, shape (batch, timesteps, hidden_size)
        Gradient of the loss with respect to the layer's outputs.
    dh, dc : ndarray, shape (batch, hidden_size)
        Gradient with respect to the final states (``dc`` is ``None`` unless LSTM).
    dh_seq : ndarray, shape (batch, timesteps, hidden_size), optional
        If given, receives ``dL/dh_t`` at every computed step (for diagnostics).
    projection : bool
        As given to :func:`unroll`.

    Returns
    -------
    dx : ndarray, shape ``x_shape``
    dh0, dc0 : ndarray, shape (batch, hidden_size)
        Gradients with respect to the initial states (``dc0`` is ``None`` unless LSTM).
    grads : list
        Gradients of ``(w_ih, w_hh, b_ih, b_hh)`` summed over all timesteps (``None`` for an
        absent bias).
    """
    _, backward_cell = _cell_functions(cell, projection)
    dh = dh.copy()
    dc = None if dc is None else dc.copy()
    dx = np.zeros(x_shape, dtype=dy.dtype)
    grads = [None if p is None else np.zeros_like(p) for p in params]
    for t, active, cache in reversed(steps):
        dh_t = dh[active] + dy[active, t]             # from the output y_t and from step t+1
        if dh_seq is not None:
            dh_seq[active, t] = dh_t
        dx_t, dh_prev, dc_prev, step_grads = backward_cell(
            dh_t, None if dc is None else dc[active], cache, params
        )
        dx[active, t] = dx_t
        dh[active] = dh_prev
        if dc is not None:
            dc[active] = dc_prev
        for total, g in zip(grads, step_grads):
            if total is not None:
                total += g
    return dx, dh, dc, grads


@dataclass
class ForwardCache:
    """What :func:`backward` needs from :func:`forward`."""

    cell: str
    num_layers: int
    num_directions: int
    weights: dict
    layer_inputs: list = field(default_factory=list)   # input of each layer (after dropout)
    steps: dict = field(default_factory=dict)          # (layer, direction) -> unroll steps
    layer_masks: list = None                           # dropout masks between the layers


def forward(cell, x, weights, h0=None, c0=None, lengths=None, *, num_layers=1, bidirectional=False,
            layer_masks=None, recurrent_masks=None):
    """Forward pass of a stacked, optionally bidirectional recurrent network.

    Parameters
    ----------
    cell : str
        ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"``.
    x : ndarray, shape (batch, timesteps, input_size)
        Batch-first input, float32 or float64.
    weights : dict of str to ndarray
        Parameters in PyTorch's names and shapes (see :func:`parameter_names`).
    h0, c0 : ndarray, shape (num_layers * num_directions, batch, hidden_size), optional
        Initial states, index ``layer * num_directions + direction``; ``None`` means zeros.
        ``c0`` is for the LSTM only.  An LSTM with a projection (``weight_hr_l0`` in
        ``weights``, PyTorch's ``proj_size``) has ``h`` of ``proj_size`` columns, here and in
        ``y``, ``h_n`` and the masks that multiply ``h``.
    lengths : ndarray of int, shape (batch,), optional
        Valid timesteps of each sequence, each in ``1..timesteps``; ``None`` means all.
    num_layers : int
    bidirectional : bool
    layer_masks : list of ndarray, shape (batch, timesteps, num_directions * hidden_size), optional
        Dropout between the layers: ``num_layers - 1`` masks, layer ``l``'s output times
        ``layer_masks[l]`` is layer ``l + 1``'s input.
    recurrent_masks : ndarray, shape (num_layers * num_directions, batch, hidden_size), optional
        Recurrent dropout masks, one per layer and direction.

    Returns
    -------
    y : ndarray, shape (batch, timesteps, num_directions * hidden_size)
        Outputs of the last layer; 0 at steps past a sequence's length.
    h_n, c_n : ndarray, shape (num_layers * num_directions, batch, hidden_size)
        Final states (``c_n`` is ``None`` unless LSTM).
    cache : ForwardCache
        Everything :func:`backward` needs.
    """
    batch, timesteps, _ = x.shape
    num_directions = 2 if bidirectional else 1
    hidden, state = state_sizes(weights)
    state_shape = (num_layers * num_directions, batch, state)
    c_shape = (num_layers * num_directions, batch, hidden)
    if lengths is None:
        lengths = np.full(batch, timesteps)
    if h0 is None:
        h0 = np.zeros(state_shape, dtype=x.dtype)
    has_c = cell_spec(cell).has_cell_state
    if has_c and c0 is None:
        c0 = np.zeros(c_shape, dtype=x.dtype)
    h_n = np.empty(state_shape, dtype=x.dtype)
    c_n = np.empty(c_shape, dtype=x.dtype) if has_c else None

    cache = ForwardCache(cell, num_layers, num_directions, weights, layer_masks=layer_masks)
    layer_input = x
    for layer in range(num_layers):
        cache.layer_inputs.append(layer_input)
        outputs = []
        for direction in range(num_directions):
            k = layer * num_directions + direction
            y, h, c, steps = unroll(
                cell, layer_input, _cell_params(cell, weights, layer, direction),
                h0[k], None if c_n is None else c0[k], lengths, reverse=direction == 1,
                recurrent_mask=None if recurrent_masks is None else recurrent_masks[k],
                projection=_projected(weights),
            )
            outputs.append(y)
            h_n[k] = h
            if c_n is not None:
                c_n[k] = c
            cache.steps[layer, direction] = steps
        layer_input = np.concatenate(outputs, axis=2) if num_directions == 2 else outputs[0]
        if layer_masks is not None and layer < num_layers - 1:
            layer_input = layer_input * layer_masks[layer]
    return layer_input, h_n, c_n, cache


def backward(cache, dy=None, dh_n=None, dc_n=None, hidden_grads=None):
    """Backpropagation through time for a :func:`forward` call.

    Parameters
    ----------
    cache : ForwardCache
        From :func:`forward`.
    dy : ndarray, shape like ``y``, optional
        Gradient of the loss with respect to the output sequence; ``None`` means zeros.
    dh_n, dc_n : ndarray, shape like ``h_n`` / ``c_n``, optional
        Gradients with respect to the final states; ``None`` means zeros.
    hidden_grads : dict, optional
        If given, receives ``(layer, direction) -> dL/dh_t``, arrays of shape
        (batch, timesteps, hidden_size), 0 at steps past a sequence's length.

    Returns
    -------
    dx : ndarray, shape like ``x``
    dh0, dc0 : ndarray, shape like ``h0``
        Gradients with respect to the initial states (``dc0`` is ``None`` unless LSTM).
    grads : dict of str to ndarray
        Gradient of every parameter, keyed like ``weights``.
    """
    is_lstm = cell_spec(cache.cell).has_cell_state
    x = cache.layer_inputs[0]
    dtype = x.dtype
    hidden, state = state_sizes(cache.weights)
    D = cache.num_directions
    state_shape = (cache.num_layers * D, x.shape[0], state)
    c_shape = (cache.num_layers * D, x.shape[0], hidden)
    top_shape = (x.shape[0], x.shape[1], D * state)
    d_out = np.zeros(top_shape, dtype) if dy is None else dy
    dh_n = np.zeros(state_shape, dtype) if dh_n is None else dh_n
    if is_lstm and dc_n is None:
        dc_n = np.zeros(c_shape, dtype)
    dh0 = np.empty(state_shape, dtype)
    dc0 = np.empty(c_shape, dtype) if is_lstm else None

    grads = {}
    for layer in reversed(range(cache.num_layers)):
        layer_input = cache.layer_inputs[layer]
        d_in = np.zeros(layer_input.shape, dtype)
        for direction in range(D):
            k = layer * D + direction
            params = _cell_params(cache.cell, cache.weights, layer, direction)
            dh_seq = None
            if hidden_grads is not None:
                dh_seq = hidden_grads[layer, direction] = np.zeros(top_shape[:2] + (state,),
                                                                   dtype)
            dx, dh, dc, param_grads = unroll_backward(
                cache.cell, cache.steps[layer, direction], params, layer_input.shape,
                d_out[:, :, direction * state:(direction + 1) * state],
                dh_n[k], dc_n[k] if is_lstm else None, dh_seq,
                projection=_projected(cache.weights),
            )
            d_in += dx
            dh0[k] = dh
            if is_lstm:
                dc0[k] = dc
            for name, g in zip(_param_names(cache.cell, cache.weights, layer, direction),
                               param_grads):
                if g is not None:
                    grads[name] = g
        d_out = d_in if cache.layer_masks is None or layer == 0 else \
            d_in * cache.layer_masks[layer - 1]
    return d_out, dh0, dc0, grads
