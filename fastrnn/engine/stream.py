"""Streaming: a stacked unidirectional RNN / LSTM / GRU advanced one timestep per call."""
from ..cell_table import cell_spec
from . import _compiled, plan

__all__ = ["Stepper", "make_stepper"]


class Stepper:
    """One-timestep-at-a-time inference of a stacked unidirectional RNN / LSTM / GRU.

    ``make_stepper(cell, weights, num_layers)`` prepares (transposes and packs) the weights
    once.  The stepper holds a *snapshot*: changing the caller's weight arrays afterwards does
    not affect it; rebuilding after a weight update is the caller's business.

    ``y_t, h_new, c_new = stepper.step(x_t, h=None, c=None)``

    * ``x_t`` (B, I); ``h``, ``c`` (num_layers, B, H) C-contiguous of the weights' dtype, or
      None for zeros (``c`` is ignored unless LSTM).
    * returns newly allocated ``h_new`` (and ``c_new`` for LSTM, else None); ``y_t`` is the view
      ``h_new[-1]`` (B, H).  The inputs are never modified, so the previous state stays valid.
    * uses the engine's own register-tiled kernel on weights packed at construction (no BLAS);
      small steps run on the calling thread (about a microsecond of overhead plus the
      arithmetic), large ones split the hidden units over two threads.

    Parameters
    ----------
    cell : {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    weights : dict of ndarray
        PyTorch names and layouts (forward direction only).
    num_layers : int
    """

    def __init__(self, cell, weights, num_layers=1):
        spec = cell_spec(cell)
        H = weights["weight_hh_l0"].shape[1]
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
        self.dtype = dtype
        units = plan.unit_blocks(H, plan.step_unit_count(I, H, spec.gates))
        self._kernel = _compiled.StepKernel(spec.code, w_ih, w_hh, bxs, bhns, units,
                                            plan.STEP_PARALLEL_MIN_WORK)
        self.step = self._kernel.step   # bound C method: no Python wrapper frame per call

    def step(self, x_t, h=None, c=None):  # pragma: no cover - replaced per instance in __init__
        """Advance one timestep (see the class docstring)."""
        return self._kernel.step(x_t, h, c)


def make_stepper(cell, weights, num_layers=1):
    """Build a :class:`Stepper` (weights snapshotted and packed once)."""
    return Stepper(cell, weights, num_layers)
