"""The cell table: one description of each recurrent cell, used by every part of fastrnn.

The reference, the compiled engine, the layers, the benchmarks and the tests all read the cells
from here: their names, codes (the integers the compiled kernels switch on; the same values as
``enum { FR_RNN_TANH, ... }`` in ``fastrnn/engine/kernels/fr_kernels.h``), gate counts and
gate names (the order in which the gates are stacked in ``weight_ih`` / ``weight_hh``, as in
PyTorch), and the names of a layer's parameters.

The LSTM's projection (PyTorch's ``proj_size``) is not a cell of its own: the gate math is the
LSTM's, only the state's width and one GEMM after the gates differ, so it is an attribute of a
layer's weights, next to the hidden size: an LSTM whose weights hold ``weight_hr_l0``
(:func:`projection_name`) is projected, and :func:`state_sizes` reads both sizes from them.
"""
from dataclasses import dataclass

__all__ = ["Cell", "CELLS", "GATES", "RNN_TANH", "RNN_RELU", "LSTM", "GRU", "RNN_LEAKY_RELU",
           "LSTM_PEEPHOLE", "GRU_RESET_BEFORE", "LEAKY_RELU_SLOPE", "cell_spec", "peephole_name",
           "projection_name", "state_sizes", "parameter_names", "layer_parameter_names"]

#: cell codes, as the compiled kernels know them
RNN_TANH, RNN_RELU, LSTM, GRU, RNN_LEAKY_RELU, LSTM_PEEPHOLE, GRU_RESET_BEFORE = range(7)
#: the negative slope of the leaky-relu RNN, ``act(a) = a if a > 0 else LEAKY_RELU_SLOPE * a``
#: (PyTorch's ``LeakyReLU`` default; the same constant as ``FR_LEAKY_RELU_SLOPE`` in the kernels)
LEAKY_RELU_SLOPE = 0.01


@dataclass(frozen=True)
class Cell:
    """One recurrent cell.

    Attributes
    ----------
    name : str
        ``"rnn_tanh"``, ``"rnn_relu"``, ``"rnn_leaky_relu"``, ``"lstm"``,
        ``"lstm_peephole"``, ``"gru"`` or ``"gru_reset_before"``.
    code : int
        The compiled kernels' code of the cell (``RNN_TANH`` ... ``GRU``).
    gate_names : tuple of str
        The gates stacked in ``weight_ih`` / ``weight_hh``, in PyTorch's order; the plain RNN
        has one block, its pre-activation.
    """

    name: str
    code: int
    gate_names: tuple

    @property
    def gates(self):
        """Number of gate blocks stacked in the weights (G: 1, 4 or 3)."""
        return len(self.gate_names)

    @property
    def has_gates(self):
        """True for the gated cells (LSTM, GRU), whose gate activations BPTT keeps."""
        return self.code in (LSTM, GRU, LSTM_PEEPHOLE, GRU_RESET_BEFORE)

    @property
    def has_cell_state(self):
        """True for the LSTMs, whose state is ``(h, c)``."""
        return self.code in (LSTM, LSTM_PEEPHOLE)

    @property
    def is_gru(self):
        """True for the GRUs (PyTorch's, whose reset gate multiplies ``h W_hn^T + b_hn``, and
        Cho et al.'s, whose reset gate multiplies ``h`` before ``W_hn``)."""
        return self.code in (GRU, GRU_RESET_BEFORE)

    @property
    def has_peepholes(self):
        """True for the peephole LSTM: one more parameter per layer and direction
        (:func:`peephole_name`)."""
        return self.code == LSTM_PEEPHOLE


#: name -> :class:`Cell`
CELLS = {c.name: c for c in (
    Cell("rnn_tanh", RNN_TANH, ("a",)),
    Cell("rnn_relu", RNN_RELU, ("a",)),
    Cell("lstm", LSTM, ("i", "f", "g", "o")),
    Cell("gru", GRU, ("r", "z", "n")),
    Cell("rnn_leaky_relu", RNN_LEAKY_RELU, ("a",)),
    Cell("lstm_peephole", LSTM_PEEPHOLE, ("i", "f", "g", "o")),
    Cell("gru_reset_before", GRU_RESET_BEFORE, ("r", "z", "n")),
)}


#: name -> number of gate blocks stacked in the weights (G)
GATES = {name: cell.gates for name, cell in CELLS.items()}


def cell_spec(name):
    """The :class:`Cell` called ``name``; ValueError naming the cells for any other value."""
    try:
        return CELLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, "
                         f"got {name!r}") from None


def parameter_names(layer, direction, bias=True):
    """Names of the parameters of one layer and direction, in PyTorch's convention.

    Parameters
    ----------
    layer : int
        Index of the stacked layer, from 0.
    direction : int
        0 for the forward direction, 1 for the reverse direction.
    bias : bool
        Whether the layer has the two bias vectors.

    Returns
    -------
    list of str
        ``weight_ih_l{layer}``, ``weight_hh_l{layer}`` and, with ``bias``, ``bias_ih_l{layer}``,
        ``bias_hh_l{layer}``; each with the suffix ``_reverse`` for ``direction == 1``.
    """
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if bias else ("weight_ih", "weight_hh")
    return [kind + suffix for kind in kinds]


def peephole_name(layer, direction):
    """Name of the peephole weights of one layer and direction of a peephole LSTM:
    ``weight_peephole_l{layer}`` (suffix ``_reverse`` for direction 1), shape ``(3 * hidden,)``,
    the diagonal weights ``p_i, p_f, p_o`` of the cell state in the input, forget and output
    gates (not a PyTorch parameter: PyTorch's LSTM has no peepholes)."""
    return f"weight_peephole_l{layer}" + ("_reverse" if direction else "")


def projection_name(layer, direction):
    """Name of the projection of one layer and direction of an LSTM with ``proj_size > 0``
    (PyTorch's): ``weight_hr_l{layer}`` (suffix ``_reverse`` for direction 1), shape
    ``(proj_size, hidden_size)``; ``h_t = (o * tanh(c_t)) W_hr^T``."""
    return f"weight_hr_l{layer}" + ("_reverse" if direction else "")


def state_sizes(weights):
    """``(hidden, state)`` of a layer's weights (PyTorch's names): the cell's units (the
    width of the gates and of an LSTM's ``c``) and the width of ``h`` (the outputs and
    ``h0`` / ``h_n``), which is the projection's ``proj_size`` when the weights hold
    ``weight_hr_l0`` and ``hidden`` otherwise."""
    state = weights["weight_hh_l0"].shape[1]
    w_hr = weights.get(projection_name(0, 0))
    return (state if w_hr is None else w_hr.shape[1]), state


def layer_parameter_names(num_layers, num_directions, bias=True):
    """Names of every parameter of a stacked layer, by layer then direction (see
    :func:`parameter_names`)."""
    return [name for layer in range(num_layers) for d in range(num_directions)
            for name in parameter_names(layer, d, bias)]
