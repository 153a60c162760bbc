"""Streaming: a stacked unidirectional RNN / LSTM / GRU advanced one timestep per call."""
import numpy as np

from ..cell_table import GRU_RESET_BEFORE, cell_spec, peephole_name, projection_name, state_sizes
from . import _compiled, plan

__all__ = ["Stepper", "make_stepper"]


class Stepper:
    """One-timestep-at-a-time inference of a stacked unidirectional RNN / LSTM / GRU.

    ``make_stepper(cell, weights, num_layers)`` copies the weights and prepares (transposes
    and packs) the copies once.  The stepper holds that *snapshot*: changing the caller's
    weight arrays afterwards does not affect it; :meth:`packed_from` tells whether they still
    hold what it packed, and rebuilding after a change is the caller's business.

    ``y_t, h_new, c_new = stepper.step(x_t, h=None, c=None)``

    * ``x_t`` (B, I); ``h``, ``c`` (num_layers, B, H) C-contiguous of the weights' dtype, or
      None for zeros (``c`` is ignored unless LSTM); a projected LSTM's ``h`` (and ``y_t``)
      has proj_size columns (``weight_hr_l{k}`` in the weights).
    * returns newly allocated ``y_t`` (B, H) (a copy of ``h_new[-1]``), ``h_new`` and
      ``c_new`` (for LSTM, else None).  The inputs are never modified, so the previous state
      stays valid.
    * uses the engine's own register-tiled kernel on weights packed at construction (no BLAS);
      small steps run on the calling thread (about a microsecond of overhead plus the
      arithmetic), large ones split the hidden units over two threads.
    * may be called from several threads at once (each call has its own scratch buffers).

    Parameters
    ----------
    cell : {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    weights : dict of ndarray
        PyTorch names and layouts (forward direction only).
    num_layers : int

    Attributes
    ----------
    checked : object
        Free for the caller's bookkeeping (None at construction): the layers record there when
        they last made sure that the weights had not changed.
    """

    def __init__(self, cell, weights, num_layers=1):
        spec = cell_spec(cell)
        # the copies are packed (not the caller's arrays, which another thread may be editing),
        # so that packed_from compares with exactly what the kernel holds
        self._copies = {name: np.array(w, order="C", copy=True) for name, w in weights.items()}
        weights = self._copies
        H, P = state_sizes(weights)
        projected = projection_name(0, 0) in weights
        I = weights["weight_ih_l0"].shape[1]
        dtype = weights["weight_hh_l0"].dtype
        w_ih, w_hh, bxs, bhns = [], [], [], []
        for layer in range(num_layers):
            sfx = f"_l{layer}"
            w_ih.append(weights["weight_ih" + sfx])
            w_hh.append(weights["weight_hh" + sfx])
            bx, bhn = plan.fold_biases(weights, sfx, spec, H, dtype)
            bxs.append(bx)
            bhns.append(bhn)
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = H
        self.state_size = P
        self.dtype = dtype
        self.checked = None
        # one unit block for the reset-before GRU (n reads r of every unit) and the projected
        # LSTM (h reads m of every unit)
        units = plan.unit_blocks(H, 1 if spec.code == GRU_RESET_BEFORE or projected
                                 else plan.step_unit_count(I, H, spec.gates))
        peepholes = ([weights[peephole_name(layer, 0)] for layer in range(num_layers)]
                     if spec.has_peepholes else None)
        w_hr = ([weights[projection_name(layer, 0)] for layer in range(num_layers)]
                if projected else None)
        self._kernel = _compiled.StepKernel(spec.code, w_ih, w_hh, bxs, bhns, units,
                                            plan.STEP_PARALLEL_MIN_WORK, peepholes, w_hr)
        self.step = self._kernel.step   # bound C method: no Python wrapper frame per call

    def step(self, x_t, h=None, c=None):  # pragma: no cover - replaced per instance in __init__
        """Advance one timestep (see the class docstring)."""
        return self._kernel.step(x_t, h, c)

    def packed_from(self, weights):
        """True if ``weights`` hold, bit for bit, the values this stepper packed.

        Parameters
        ----------
        weights : dict of ndarray
            C-contiguous arrays, named as at construction.

        Returns
        -------
        bool
        """
        return weights.keys() == self._copies.keys() and all(
            _compiled.same_bytes(weights[name], copy) for name, copy in self._copies.items())


def make_stepper(cell, weights, num_layers=1):
    """Build a :class:`Stepper` (weights snapshotted and packed once)."""
    return Stepper(cell, weights, num_layers)
