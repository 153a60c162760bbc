"""The compiled forward pass of a stacked (bi)directional RNN / LSTM / GRU.

Inputs arrive validated by the layers (C-contiguous arrays of one dtype, float32 or float64;
``lengths`` int64 or None).  :func:`forward` makes the plan (:mod:`fastrnn.engine.plan`) and
hands everything to one compiled call (``_compiled.forward_stack``), which allocates every
buffer once and runs kernels that never allocate in the time loop.  A caller whose weights do
not change between calls can pass a :class:`PackedWeights`: the weights are then packed for
the kernels once, not in every call (what ONNX Runtime does when it loads a model).
"""
from ..cell_table import (GRU_RESET_BEFORE, cell_spec, parameter_names, peephole_name,
                          projection_name, state_sizes)
from . import _compiled, plan, runtime

__all__ = ["PackedWeights", "forward"]


class PackedWeights:
    """The weights of one stack prepared for the forward kernels, reused across calls.

    The caller keeps one only while the weights it was made for (biases included) do not
    change, and passes it to every :func:`forward` call on those weights: each call fills in
    what it lacks (the folded biases per dtype, the input weights packed per instruction set
    and dtype, the recurrent weights per plan) and later calls find it there.  It holds one
    packed copy of every weight matrix per entry.  Several threads may share one (an entry two
    threads make at once is made twice, and both are right).
    """

    __slots__ = ("token", "_entries")

    def __init__(self, token=None):
        #: free for the caller: what it needs to know that the weights are still the same
        self.token = token
        self._entries = {}

    def biases(self, dtype, fold):
        """The folded biases for ``dtype``: ``fold()`` on the first call."""
        got = self._entries.get(("biases", dtype))
        if got is None:
            got = self._entries[("biases", dtype)] = fold()
        return got

    def packing(self, w_ih, w_hh, gates, units, mode, dtype, input_in_step=False, cell=-1):
        """The ``packed`` argument of ``forward_stack`` for a call on the kernels in use
        (None if they changed while it packed)."""
        isa = runtime.isa()
        blocks = tuple(units.tolist())
        panel = mode == plan.MODE_PANEL
        ih = None if input_in_step else self._entries.get((isa, dtype))
        hh = self._entries.get((isa, dtype, blocks)) if panel else None
        ihb = self._entries.get((isa, dtype, blocks, "input")) if input_in_step else None
        need_ih, need_hh = ih is None and not input_in_step, panel and hh is None
        need_ihb = input_in_step and ihb is None
        if need_ih or need_hh or need_ihb:
            made = _compiled.pack_forward_weights(w_ih, w_hh, gates, units, need_ih, need_hh,
                                                  need_ihb, cell)
            if made[0] != isa:    # another thread switched the kernels meanwhile
                return None
            if need_ih:
                ih = self._entries[(isa, dtype)] = made[2]
            if need_hh:
                hh = self._entries[(isa, dtype, blocks)] = made[3]
            if need_ihb:
                ihb = self._entries[(isa, dtype, blocks, "input")] = made[4]
        return isa, blocks, ih, hh, ihb


def _fold_biases(weights, spec, H, dtype, num_layers, D):
    """``(bx list, bhn list)`` over the layers and directions (see plan.fold_biases)."""
    folded = [plan.fold_biases(weights, parameter_names(layer, d)[0][len("weight_ih"):], spec,
                               H, dtype)
              for layer in range(num_layers) for d in range(D)]
    return [b for b, _ in folded], [bn for _, bn in folded]


def forward(cell, x, weights, h0=None, c0=None, lengths=None, *, num_layers=1,
            bidirectional=False, training=False, packed=None, layer_masks=None,
            recurrent_masks=None, _plan_override=None):
    """Compiled forward pass of a stacked (bi)directional RNN / LSTM / GRU.

    Parameters
    ----------
    cell : {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    x : ndarray (B, T, I), float32 or float64, C-contiguous (validated by the caller)
    weights : dict of ndarray
        PyTorch names and layouts: ``weight_ih_l{k}`` (G*H, I_k), ``weight_hh_l{k}`` (G*H, H),
        optional ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,), ``_reverse`` suffix for direction 1.
        An LSTM with a projection (PyTorch's ``proj_size`` P) also has ``weight_hr_l{k}``
        (P, H), and its ``weight_hh_l{k}`` is (4H, P): then h (h0, h_n, y, the masks on h,
        the workspace's outputs) has P columns where the others have H.
    h0, c0 : ndarray (num_layers*D, B, H) or None (zeros); c0 only for LSTM
    lengths : int64 ndarray (B,) with values in 1..T, any order, or None (all T)
    num_layers, bidirectional : stacking / directions (D = 2 if bidirectional)
    training : bool
        If True, also return the workspace that BPTT needs.
    packed : PackedWeights, optional
        The weights packed by earlier calls on the same (unchanged) ``weights``; None packs
        them in this call.
    layer_masks : list of ndarray (B, T, D*H), optional
        Dropout between the layers (``num_layers - 1`` masks of x's dtype, zeros and
        ``1 / (1 - p)``): layer l's output times ``layer_masks[l]`` feeds layer l + 1.
    recurrent_masks : ndarray (num_layers*D, B, H), optional
        Recurrent dropout: W_hh reads ``h_{t-1} * recurrent_masks[layer * D + d]``.
    _plan_override : (batch blocks, unit blocks, mode[, input in step]), optional
        For tests: force the split, the recurrent GEMM kernel and where the input is
        projected (default: before the time loop).

    Returns
    -------
    y : ndarray (B, T, D*H); zeros at t >= lengths[b]
    h_n : ndarray (num_layers*D, B, H), state after each sequence's last valid step
    c_n : ndarray like h_n (LSTM) or None
    workspace : dict or None
        None unless ``training``.  Otherwise (all arrays in the caller's batch order, indexed by
        the real time index t, zeros at t >= lengths[b]; direction d = 0 forward, 1 reverse)::

            "cell", "num_layers", "num_directions", "hidden_size": as given
            "proj_size": the width of h (a projected LSTM's P; else hidden_size)
            "lengths":  int64 (B,)
            "layer_masks", "recurrent_masks": the call's dropout masks (or None)
            "x", "h0", "c0": the call's input and initial states (references, not copies;
                        None where not given / not LSTM)
            "outputs":  list over layers of (B, T, D*H) -- layer l's output, i.e. the hidden
                        state sequence h_t of (l, d) is outputs[l][:, :, d*H:(d+1)*H] and the
                        input of layer l+1; outputs[-1] is y itself (no copy)
            "gates":    list over layers of (D, B, T, G*H), gate activations *after* the
                        nonlinearity at step t: LSTM [sig(i), sig(f), tanh(g), sig(o)],
                        GRU [r, z, n]; None for the plain RNN (its activation is h_t itself)
            "c":        LSTM: list over layers of (D, B, T, H) cell state after step t; else None
            "hn":       GRU: list over layers of (D, B, T, H), h_{t-1} W_hn^T + b_hn; else None

        The state *before* step t is h at t-1 (forward) / t+1 (reverse) or h0/c0 at each
        sequence's first step.  Size: L*B*T*(D*H + D*G*H [+ D*H]) elements (plus c / hn).
    """
    spec = cell_spec(cell)
    G = spec.gates
    B, T, I = x.shape
    D = 2 if bidirectional else 1
    H, P = state_sizes(weights)
    projected = projection_name(0, 0) in weights
    nthreads = runtime.get_num_threads()
    p = plan.forward_plan(B, T, I, H, G, D, nthreads)
    if _plan_override is None:
        nb, nu, mode, in_step = p.batch_blocks, p.unit_blocks, p.mode, p.input_in_step
    else:
        nb, nu, mode, in_step = (tuple(_plan_override) + (False,))[:4]
    if spec.code == GRU_RESET_BEFORE or projected:
        nu = 1      # (its n gate reads r of every unit; the projection reads m of every unit)
    nb, nu = plan.clamp_work_items(nb, nu, B, H)
    layout = plan.batch_layout(lengths, B, T, nb)
    units = plan.unit_blocks(H, nu)
    names = [parameter_names(layer, d) for layer in range(num_layers) for d in range(D)]
    w_ih = [weights[n[0]] for n in names]
    w_hh = [weights[n[1]] for n in names]
    fold = (weights, spec, H, x.dtype, num_layers, D)
    if packed is None:
        (bx, bhn), packed_arg = _fold_biases(*fold), None
    else:
        bx, bhn = packed.biases(x.dtype.char, lambda: _fold_biases(*fold))
        packed_arg = packed.packing(w_ih, w_hh, G, units, mode, x.dtype.char, in_step,
                                    spec.code)
    peepholes = ([weights[peephole_name(layer, d)] for layer in range(num_layers)
                  for d in range(D)] if spec.has_peepholes else None)
    w_hr = ([weights[projection_name(layer, d)] for layer in range(num_layers)
             for d in range(D)] if projected else None)
    y, h_n, c_n, ws = _compiled.forward_stack(
        spec.code, x, w_ih, w_hh, bx, bhn, h0, c0, layout.lengths, layout.order,
        layout.blocks, units, layout.partial, num_layers, D, training, nthreads, int(mode),
        p.projection_threads, packed_arg, bool(in_step), layer_masks, recurrent_masks,
        peepholes, w_hr)
    if ws is not None:
        ws.update(cell=cell, num_layers=num_layers, num_directions=D, hidden_size=H,
                  proj_size=P, x=x, h0=h0, c0=c0 if spec.has_cell_state else None)
    return y, h_n, c_n, ws
