"""Compiled backpropagation through time (BPTT) for RNN / LSTM / GRU (private).

:func:`backward` consumes the *workspace* of the compiled training forward
(``fastrnn.engine.forward.forward(..., training=True)``) and returns what
:func:`fastrnn.reference.backward` returns: ``(dx, dh0, dc0, grads)``.

Only the ``dh`` (and LSTM ``dc``) recurrence is sequential.  It runs in one Numba kernel per
layer (one per cell family) that walks the timesteps backwards, turns the stored gate
activations into the gate pre-activation gradients ``dA`` (no forward recomputation) and pushes
``dh`` through ``W_hh`` with one call of the engine's C GEMM kernel per step (W_hh packed once)
on the *active* rows only (rows sorted by length, descending, so the active rows of a step are a
prefix: a padded batch costs what its valid steps cost).  Two cores share the work either as
independent items (batch blocks, or the two directions) on two threads of the engine's OpenMP
team, or, for a batch too small to split, by splitting each step's GEMM by column panels in the
C kernel (see :func:`_plan`).  No BLAS is called.  Denormals are flushed to zero inside the
kernels, as in the forward, and the rows of the next step are prefetched while the current one
runs.  Every step's ``dA`` is also stored at its ``(b, t)`` place and the bias gradients are
summed on the fly, so the weight gradients and the input gradient of *all* timesteps are a few
large GEMMs (the engine's own kernel and threads, ``fastrnn.engine.gemm.matmul``)::

    dW_ih = dA^T @ X          dx = dA @ W_ih (both directions in one GEMM; skipped for
                                              layer 0 with ``input_grad=False``)
    dW_hh = dA_h^T @ H_prev   (the output sequence shifted by one step, see _dw_hh; LSTM and
                               RNN with narrow X and H: one GEMM [X | H_prev]^T @ dA)

The kernels live in :mod:`fastrnn.engine.bptt_kernels`, which imports Numba and is itself
imported by the first :func:`backward` call, so ``import fastrnn`` and the forward pass never
pay for it.  All kernels are compiled with ``cache=True``.

Workspace layout consumed
-------------------------
A dict, arrays in the caller's batch order, indexed by the real time index ``t`` (``G`` gates:
1 RNN, 4 LSTM, 3 GRU; ``D`` directions; ``L`` layers)::

    "cell", "num_layers", "num_directions", "hidden_size"
    "lengths"  int64 (B,), 1..T
    "layer_masks", "recurrent_masks"  the forward's dropout masks, or None (optional entries):
               L-1 arrays (B, T, D*H) between the layers; (L*D, B, H) on h_{t-1} where W_hh
               reads it
    "x"        (B, T, I) the network input (layer 0's input)                 [*]
    "h0"       (L*D, B, H) initial hidden state, or None (zeros)              [*]
    "c0"       (L*D, B, H) initial LSTM cell state, or None (zeros)           [*]
    "outputs"  list over layers of (B, T, D*H): h_t of (layer, d) in columns d*H:(d+1)*H,
               zeros at t >= lengths[b]
    "gates"    list over layers of (D, B, T, G*H) gate activations after the nonlinearity
               (LSTM i, f, g, o; GRU r, z, n); None for the plain RNN
    "c"        LSTM: list over layers of (D, B, T, H) cell state after step t
    "hn"       GRU: list over layers of (D, B, T, H), h_prev W_hn^T + b_hn
    "proj_size"  the width P of h (optional; default H): an LSTM with a projection
               (``weight_hr_l{k}`` in the weights) has ``outputs``, ``h0``, ``dy``, ``dh_n``
               and the recurrent masks of P columns where the above says H

A projected LSTM's BPTT needs ``m_t = o_t * tanh(c_t)`` (what W_hr read) for ``dW_hr``: it is
recomputed from the gates and cell states the workspace holds (the step needs ``tanh(c_t)``
anyway, and the training forward then keeps no more than the plain LSTM's).

This is ``fastrnn.engine.forward``'s documented training workspace, plus the entries marked ``[*]``
which :func:`backward` also accepts as keyword arguments (``x=``, ``h0=``, ``c0=``).
``tanh(c_t)`` is not stored: it is ``h_t / o_t`` (exact to rounding; where ``o_t == 0`` every
term that uses it is multiplied by ``o_t`` and vanishes).  :func:`workspace_from_reference`
builds the same layout from the NumPy reference forward (for tests).

Gradient clipping lives in :mod:`fastrnn.optim` (``clip_grad_norm``, ``clip_grad_value``).
"""
import numpy as np

from ..cell_table import (GRU, GRU_RESET_BEFORE, LEAKY_RELU_SLOPE, RNN_LEAKY_RELU, RNN_RELU,
                          cell_spec, parameter_names, peephole_name, projection_name,
                          state_sizes)
from . import _compiled, plan, runtime
from .gemm import SWAP_MAX_N, matmul

__all__ = ["backward", "workspace_from_reference"]

# ----------------------------------------------------------------------------------------------
# Work items and threads
# ----------------------------------------------------------------------------------------------


def _items(D, lengths, T, nblocks):
    """``(order, items)``: the rows laid out by the planner (:func:`plan.batch_layout`: sorted
    by length, descending, in ``nblocks`` interleaved blocks, as in the forward) and the work
    items ``(direction, p0, p1, slot)``, one per block and direction."""
    layout = plan.batch_layout(lengths, len(lengths), T, nblocks)
    bounds = layout.blocks
    n = layout.num_blocks
    items = np.array([(d, bounds[i], bounds[i + 1], d * n + i) for d in range(D)
                      for i in range(n)], dtype=np.int64).reshape(-1, 4)
    return layout.order, items


def _run_items(kernel, items, cfg, nthreads):
    """Run ``kernel(items, *cfg)`` with the work items split over ``nthreads`` threads of the
    engine's OpenMP team (``_compiled.run_on_team``; the kernels release the GIL and call no
    BLAS)."""
    groups = [np.ascontiguousarray(items[i::nthreads]) for i in range(min(nthreads, len(items)))]
    if len(groups) == 1:
        kernel(groups[0], *cfg)
    else:
        _compiled.run_on_team([lambda g=g: kernel(g, *cfg) for g in groups])


# ----------------------------------------------------------------------------------------------
# Dense parts: weight gradients over all timesteps at once
# ----------------------------------------------------------------------------------------------

def _shift(d, n):
    """Rows of the flattened ``(b, t)`` order that pair each step with the state before it:
    ``(rows of dA and x, rows of the outputs holding h_prev, the one row of dA left out)``.

    ``h_prev`` of row ``(b, t)`` is the output row before it (forward) or after it (reverse),
    except at the rows where sequences start (see :func:`_h0_fix`).
    """
    if d == 0:
        return slice(1, n), slice(0, n - 1), 0
    return slice(0, n - 1), slice(1, n), n - 1


def _h0_fix(dah3, y3, d, H, GH, h0d, lengths):
    """``(first, corr)`` with ``first^T @ corr`` the correction of the shifted GEMM of
    :func:`_shift`: at the row where a sequence starts it paired dA with the neighbouring
    sequence's output (or a zero output past a shorter sequence's end, or nothing at the row
    left out) instead of ``h0[b]``.  ``first`` (B, GH) are those dA rows, ``corr`` (B, H) is
    ``h0 - what was used``."""
    B, T = y3.shape[0], y3.shape[1]
    wrong = np.zeros((B, H), dtype=y3.dtype)
    if d == 0:
        first = dah3[:, 0, :GH]                           # rows (b, 0) start the sequences
        wrong[1:] = y3[:-1, T - 1, :H]
    else:
        first = dah3[np.arange(B), lengths - 1, d * GH:(d + 1) * GH]
        full = np.flatnonzero(lengths[:-1] == T)
        wrong[full] = y3[full + 1, 0, d * H:(d + 1) * H]
    return first, (-wrong if h0d is None else h0d - wrong)


def _dw_hh(dah3, y3, d, D, H, GH, h0d, lengths):
    """``sum_(b,t) dA_h[b,t]^T h_prev[b,t]`` as one GEMM on the output sequence shifted by one
    step (:func:`_shift`) and one small GEMM for the sequence starts (:func:`_h0_fix`)."""
    B, T = y3.shape[0], y3.shape[1]
    rd, ry, _ = _shift(d, B * T)
    da2 = dah3.reshape(B * T, D * GH)[:, d * GH:(d + 1) * GH]
    y2 = y3.reshape(B * T, D * H)[:, d * H:(d + 1) * H]
    dw = matmul(da2[rd], y2[ry], trans_a=True)
    first, corr = _h0_fix(dah3, y3, d, H, GH, h0d, lengths)
    return matmul(first, corr, trans_a=True, out=dw)


def _dw_ih_hh(da3, x2, y3, d, D, H, GH, h0d, lengths):
    """``(dW_ih, dW_hh)`` of direction ``d`` when both take the same dA (LSTM, RNN).

    With narrow inputs and states (at most ``SWAP_MAX_N`` columns, where dA is the operand
    that gets packed): one GEMM ``[x | h_prev]^T @ dA`` on one packing of dA, the rows shifted
    as in :func:`_dw_hh`, and the row that the shift leaves out added to dW_ih as an outer
    product (measured: 10-20% faster than two GEMMs at I = H = 64 and 128).  Otherwise two
    GEMMs ``dA^T @ x`` and :func:`_dw_hh`, which write the gradients in place (the fused
    result would need transposing: slower at H = 512).
    """
    B, T = y3.shape[0], y3.shape[1]
    I = x2.shape[1]
    da2 = da3.reshape(B * T, D * GH)[:, d * GH:(d + 1) * GH]
    if max(I, H) > SWAP_MAX_N:
        return (matmul(da2, x2, trans_a=True),
                _dw_hh(da3, y3, d, D, H, GH, h0d, lengths))
    rd, ry, miss = _shift(d, B * T)
    y2 = y3.reshape(B * T, D * H)[:, d * H:(d + 1) * H]
    w = matmul(x2[rd], da2[rd], trans_a=True, a2=y2[ry])     # (I + H, GH)
    w[:I] += np.outer(x2[miss], da2[miss])
    first, corr = _h0_fix(da3, y3, d, H, GH, h0d, lengths)
    matmul(corr, first, trans_a=True, out=w[I:])
    return np.ascontiguousarray(w[:I].T), np.ascontiguousarray(w[I:].T)


def _dw_hr(dg, mo, d, P, H):
    """``dW_hr`` (P, H) of direction ``d``: ``sum_(b,t) g[b,t]^T m[b,t]`` as one GEMM (both
    zero at the steps not computed)."""
    B, T = dg.shape[0], dg.shape[1]
    return matmul(dg.reshape(B * T, -1)[:, d * P:(d + 1) * P],
                  mo.reshape(B * T, -1)[:, d * H:(d + 1) * H], trans_a=True)


# ----------------------------------------------------------------------------------------------
# Public entry
# ----------------------------------------------------------------------------------------------

def backward(cell, weights, workspace, dy=None, dh_n=None, dc_n=None, *, x=None, h0=None,
             c0=None, input_grad=True):
    """BPTT of a compiled training forward: gradients of inputs, initial states and weights.

    Parameters
    ----------
    cell : {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    weights : dict of str to ndarray
        The parameters the forward used, PyTorch names and shapes.
    workspace : dict
        From ``fastrnn.engine.forward.forward(..., training=True)`` (layout in the module docstring).
    dy : ndarray (B, T, D*H), optional
        Gradient on the output sequence; ``None`` means zeros.  Values at ``t >= lengths[b]``
        are ignored.
    dh_n, dc_n : ndarray (L*D, B, H), optional
        Gradients on the final states; ``None`` means zeros (``dc_n`` LSTM only).
    x, h0, c0 : ndarray, optional
        The forward's input and initial states, if the workspace does not carry them
        (``"x"``, ``"h0"``, ``"c0"``); ``h0`` / ``c0`` ``None`` mean zeros.
    input_grad : bool
        False skips the input gradient of layer 0 (its GEMM ``dA @ W_ih``); ``dx`` is None.

    Returns
    -------
    dx : ndarray (B, T, I) or None
    dh0 : ndarray (L*D, B, H)
    dc0 : ndarray (L*D, B, H) or None (not LSTM)
    grads : dict of str to ndarray, keyed like ``weights``
    """
    spec = cell_spec(cell)
    if workspace.get("cell", cell) != cell:
        raise ValueError(f"backward: the workspace is of a {workspace['cell']!r} forward, "
                         f"not {cell!r}")
    if x is None and "x" not in workspace:
        raise ValueError("backward: the forward's input is needed; pass x= (the workspace "
                         "has no 'x' entry)")
    from . import bptt_kernels  # imports Numba: only the first backward pays for it
    code, G = spec.code, spec.gates
    projected = projection_name(0, 0) in weights
    if projected and code not in bptt_kernels.PROJECTED_KERNELS:
        raise ValueError(f"backward: a projection (weight_hr_l0) is for the LSTM, not "
                         f"{cell!r}")
    kernel = (bptt_kernels.PROJECTED_KERNELS if projected else bptt_kernels.KERNELS)[code]
    ws = workspace
    if x is None:
        x = ws["x"]
    if h0 is None:
        h0 = ws.get("h0")
    has_c = spec.has_cell_state
    if c0 is None and has_c:
        c0 = ws.get("c0")
    L = int(ws["num_layers"])
    D = int(ws["num_directions"])
    H = int(ws["hidden_size"])
    P = int(ws.get("proj_size", H))       # the width of h
    GH = G * H
    B, T = x.shape[0], x.shape[1]
    dtype = x.dtype
    lengths = np.ascontiguousarray(ws["lengths"], dtype=np.int64)
    item_threads, gemm_threads = plan.bptt_plan(D, B, H, runtime.get_num_threads())
    order, items = _items(D, lengths, T, item_threads if D == 1 else 1)

    def c_(a):
        return np.ascontiguousarray(a, dtype=dtype)

    def absent(*leading):
        """An array the call has not: its leading dimensions, rows of length 0, never read."""
        return np.empty(leading + (0,), dtype=dtype)

    dh0 = np.empty((L * D, B, P), dtype=dtype)
    dc0 = np.empty((L * D, B, H), dtype=dtype) if has_c else None
    dhn_all = None if dh_n is None else c_(dh_n)
    dcn_all = None if (dc_n is None or not has_c) else c_(dc_n)
    zstate = np.zeros((D, B, P), dtype=dtype)
    zc = np.zeros((D, B, H), dtype=dtype)
    init_all = c0 if has_c else h0                     # the state before the first step
    grads = {}
    dout = None if dy is None else c_(dy)
    lmasks = ws.get("layer_masks")
    rmasks = ws.get("recurrent_masks")

    for layer in reversed(range(L)):
        sl = slice(layer * D, (layer + 1) * D)
        inp = x if layer == 0 else ws["outputs"][layer - 1]
        if layer > 0 and lmasks is not None:
            inp = inp * lmasks[layer - 1]             # what the layer read (dropout)
        inp = c_(inp)
        I_l = inp.shape[2]
        y3 = ws["outputs"][layer]
        rmask = None if rmasks is None else c_(rmasks[sl])
        # W_hh read h_{t-1} * mask: the states its gradient pairs with dA
        y3r = y3 if rmask is None else np.concatenate(
            [y3[:, :, d * P:(d + 1) * P] * rmask[d][:, None, :] for d in range(D)], axis=2)
        sfx = [parameter_names(layer, d)[0][len("weight_ih"):] for d in range(D)]
        wl = [np.ascontiguousarray(weights["weight_hh" + s], dtype=dtype) for s in sfx]
        if code == GRU_RESET_BEFORE:    # W_hr, W_hz panels, then W_hn's (two GEMMs a step)
            split = _compiled.packed_size(2 * H, H, dtype)
            wpk = np.empty((D, split + _compiled.packed_size(H, H, dtype)), dtype=dtype)
            for d in range(D):
                _compiled.pack_rows(np.ascontiguousarray(wl[d][:2 * H]), wpk[d, :split])
                _compiled.pack_rows(np.ascontiguousarray(wl[d][2 * H:]), wpk[d, split:])
        else:
            split = 0
            wpk = np.empty((D, _compiled.packed_size(GH, P, dtype)), dtype=dtype)
            for d in range(D):
                _compiled.pack_rows(wl[d], wpk[d])     # W_hh as (GH, P) panels
        if projected:                                  # W_hr as (P, H) panels: dm = g W_hr
            whr = [np.ascontiguousarray(weights[projection_name(layer, d)], dtype=dtype)
                   for d in range(D)]
            whr_pk = np.empty((D, _compiled.packed_size(P, H, dtype)), dtype=dtype)
            for d in range(D):
                _compiled.pack_rows(whr[d], whr_pk[d])
            dg = np.zeros((B, T, D * P), dtype=dtype)   # the kernel writes the valid steps
            mo = np.zeros((B, T, D * H), dtype=dtype)   # (zero elsewhere: a GEMM reads them)
        da = np.empty((B, T, D * GH), dtype=dtype)      # the kernels zero the unused steps
        dah = np.empty((B, T, D * GH), dtype=dtype) if code == GRU else da
        dbias = np.empty((len(items), GH if code != GRU else 4 * H), dtype=np.float64)
        dpeep = np.empty((len(items), 3 * H if spec.has_peepholes else 0), dtype=np.float64)
        cfg = bptt_kernels.BpttConfig(
            one=dtype.type(1), H=H, GH=GH, relu=code in (RNN_RELU, RNN_LEAKY_RELU),
            slope=dtype.type(LEAKY_RELU_SLOPE if code == RNN_LEAKY_RELU else 0),
            order=order, lengths=lengths,
            outputs=y3,
            gates=ws["gates"][layer] if spec.has_gates else absent(D, B, T),
            cells=ws["c"][layer] if has_c else absent(D, B, T),
            hn=ws["hn"][layer] if spec.is_gru else absent(D, B, T),
            init=c_(init_all[sl]) if init_all is not None else absent(D, B),
            has_init=init_all is not None,
            dy=dout if dout is not None else absent(B, T), has_dy=dout is not None,
            dh_n=dhn_all[sl] if dhn_all is not None else zstate,
            dc_n=dcn_all[sl] if dcn_all is not None else zc,
            w_packed=wpk, is32=dtype == np.float32, gemm_threads=gemm_threads,
            zeros=np.zeros(H, dtype=dtype),
            rmask=rmask if rmask is not None else absent(D, B), has_rmask=rmask is not None,
            peep=(np.stack([c_(weights[peephole_name(layer, d)]) for d in range(D)])
                  if spec.has_peepholes else absent(D)),
            w_split=split,
            da=da, dah=dah, dh0=dh0[sl], dc0=dc0[sl] if has_c else absent(D, B),
            dbias=dbias, dpeep=dpeep, P=P,
            w_hr=whr_pk if projected else absent(D),
            dg=dg if projected else absent(B, T), mo=mo if projected else absent(B, T))
        _run_items(kernel, items, cfg, item_threads)

        # dense parts: all timesteps at once
        da2 = da.reshape(B * T, D * GH)
        x2 = inp.reshape(B * T, I_l)
        if code == GRU:       # GRU: dW_hh takes its own dA (dn * r in the n gate)
            dwih = matmul(da2, x2, trans_a=True)          # (D*GH, I)
        if layer > 0 or input_grad:
            if D == 1:
                wih = weights["weight_ih" + sfx[0]]
            else:
                wih = np.concatenate([weights["weight_ih" + s] for s in sfx], axis=0)
            dout = matmul(da2, np.ascontiguousarray(wih, dtype=dtype)).reshape(B, T, I_l)
            if layer > 0 and lmasks is not None:
                dout *= lmasks[layer - 1]
        else:
            dout = None
        dbd = dbias.reshape(D, -1, dbias.shape[1]).sum(axis=1)    # per direction
        dbx = dbd[:, :GH]
        dbh = dbx if code != GRU else np.concatenate([dbd[:, :2 * H], dbd[:, 3 * H:]], axis=1)
        has_bih = ("bias_ih" + sfx[0]) in weights
        has_bhh = ("bias_hh" + sfx[0]) in weights
        for d in range(D):
            s = sfx[d]
            h0d = None if h0 is None else h0[layer * D + d]
            if h0d is not None and rmask is not None:
                h0d = h0d * rmask[d]
            if code == GRU:
                grads["weight_ih" + s] = dwih[d * GH:(d + 1) * GH]
                grads["weight_hh" + s] = _dw_hh(dah, y3r, d, D, H, GH, h0d, lengths)
            elif code == GRU_RESET_BEFORE:    # W_hn reads r * h_{t-1}, kept in "hn"
                dad = da2[:, d * GH:(d + 1) * GH]
                grads["weight_ih" + s] = matmul(dad, x2, trans_a=True)
                dw = _dw_hh(da, y3r, d, D, H, GH, h0d, lengths)
                dw[2 * H:] = matmul(np.ascontiguousarray(dad[:, 2 * H:]),
                                    ws["hn"][layer][d].reshape(B * T, H), trans_a=True)
                grads["weight_hh" + s] = dw
            else:
                grads["weight_ih" + s], grads["weight_hh" + s] = _dw_ih_hh(
                    da, x2, y3r, d, D, P, GH, h0d, lengths)
            if projected:      # dW_hr = sum_(b,t) g^T m (zero at the steps not computed)
                grads[projection_name(layer, d)] = _dw_hr(dg, mo, d, P, H)
            if has_bih:
                grads["bias_ih" + s] = dbx[d].astype(dtype)
            if has_bhh:
                grads["bias_hh" + s] = dbh[d].astype(dtype)
            if spec.has_peepholes:     # (summed over the direction's work items)
                grads[peephole_name(layer, d)] = dpeep.reshape(D, -1, 3 * H)[d].sum(
                    axis=0).astype(dtype)
    return dout, dh0, dc0, grads


# ----------------------------------------------------------------------------------------------
# Workspace from the NumPy reference forward (tests, and the reference of the layout)
# ----------------------------------------------------------------------------------------------

def workspace_from_reference(cache, x, h0=None, c0=None):
    """Build the workspace layout of the module docstring from a reference forward cache.

    Parameters
    ----------
    cache : fastrnn.reference.ForwardCache
        From ``fastrnn.reference.forward(cell, x, weights, h0, c0, lengths, ...)``.
    x, h0, c0 : ndarray
        The same input and initial states (``None`` for zeros).
    """
    cell = cache.cell
    spec = cell_spec(cell)
    G = spec.gates
    L, D = cache.num_layers, cache.num_directions
    H, P = state_sizes(cache.weights)
    projected = projection_name(0, 0) in cache.weights
    B, T = x.shape[0], x.shape[1]
    dtype = x.dtype
    lengths = np.zeros(B, dtype=np.int64)
    for t, active, _ in cache.steps[0, 0]:
        lengths[active] = np.maximum(lengths[active], t + 1)
    ws = {"cell": cell, "num_layers": L, "num_directions": D, "hidden_size": H,
          "proj_size": P, "lengths": lengths, "x": x, "h0": h0,
          "c0": c0 if spec.has_cell_state else None,
          "outputs": [], "gates": [] if spec.has_gates else None,
          "c": [] if spec.has_cell_state else None, "hn": [] if spec.is_gru else None}
    for layer in range(L):
        out = np.zeros((B, T, D * P), dtype=dtype)
        gates = np.zeros((D, B, T, G * H), dtype=dtype)
        cs = np.zeros((D, B, T, H), dtype=dtype)
        hn = np.zeros((D, B, T, H), dtype=dtype)
        for d in range(D):
            for t, active, cc in cache.steps[layer, d]:
                if projected:   # the LSTM's cache, and its output m that W_hr projects
                    cc, _ = cc
                if not spec.has_gates:
                    h_new = cc[-1]
                elif spec.has_cell_state:
                    c_prev, i, f, g, o, tanh_c = cc[3:9]
                    gates[d, active, t] = np.concatenate([i, f, g, o], axis=1)
                    h_new = o * tanh_c
                    # c_t from c' = f c + i g (the reference keeps tanh(c') only)
                    cs[d, active, t] = f * c_prev + i * g
                else:           # (GRUs: hn keeps h W_hn^T + b_hn, or r * h for reset-before)
                    _, h_prev, _, _, r, z, n, h_n = cc
                    gates[d, active, t] = np.concatenate([r, z, n], axis=1)
                    hn[d, active, t] = h_n
                    h_new = (1 - z) * n + z * h_prev
                if projected:
                    h_new = h_new @ cache.weights[projection_name(layer, d)].T
                out[active, t, d * P:(d + 1) * P] = h_new
        ws["outputs"].append(out)
        if spec.has_gates:
            ws["gates"].append(gates)
        if spec.has_cell_state:
            ws["c"].append(cs)
        if spec.is_gru:
            ws["hn"].append(hn)
    return ws

