"""What the tests share: the cells, layers and weights to test with, the instruction sets to
run the kernels on, error measures and finite differences.

The tests are laid out like the package (``engine/``, ``layers/``, ``models/``, ``reference/``,
``cli/``, ``optim/``, ``text/``; the modules at the top of ``fastrnn/`` here at the top); every
helper more than one test file needs lives here.
"""
from pathlib import Path

import numpy as np
import pytest

from fastrnn.cell_table import CELLS as CELL_TABLE
from fastrnn.cell_table import GATES as CELL_GATES
from fastrnn.cell_table import parameter_names, peephole_name, projection_name

#: the root of the checkout (README.md, pyproject.toml, examples/)
ROOT = Path(__file__).resolve().parent.parent
#: every cell name
CELLS = tuple(CELL_TABLE)
#: the LSTM with a projection (PyTorch's proj_size), under a name of its own in the tests:
#: fastrnn's cell is "lstm" and the projection is in its weights (weight_hr_l{k}); the tests
#: give it :func:`proj_size` units
LSTM_PROJ = "lstm_proj"
#: every cell name, and the projected LSTM's
VARIANTS = CELLS + (LSTM_PROJ,)
#: gate blocks of each name of VARIANTS
GATES = {**CELL_GATES, LSTM_PROJ: 4}
__all__ = ["CELLS", "GATES", "LSTM_PROJ", "ROOT", "VARIANTS", "engine_cell", "has_c", "isa",
           "make_layer", "make_weights", "numerical_gradient", "proj_size", "rel_err", "rng",
           "state_arrays", "state_size"]


def proj_size(hidden):
    """The projection the tests give an LSTM of ``hidden`` units (``LSTM_PROJ``): two thirds,
    rounded down (odd sizes for many H); none for ``hidden = 1`` (a projection is smaller)."""
    return (2 * hidden) // 3 if hidden > 1 else 0


def state_size(cell, hidden):
    """The width of ``h`` of a test cell of ``hidden`` units: its projection's for
    ``LSTM_PROJ``, else ``hidden``."""
    return (proj_size(hidden) or hidden) if cell == LSTM_PROJ else hidden


def engine_cell(cell):
    """The name the engines know a test cell by (``LSTM_PROJ`` is the ``"lstm"``)."""
    return "lstm" if cell == LSTM_PROJ else cell


def make_layer(cell, input_size, hidden_size, **kwargs):
    """A layer of the given cell name ("rnn_tanh", "rnn_relu", "lstm", "gru")."""
    import fastrnn

    if cell.startswith("rnn_"):
        return fastrnn.RNN(input_size, hidden_size, nonlinearity=cell[4:], **kwargs)
    if cell == "lstm_peephole":
        return fastrnn.LSTM(input_size, hidden_size, peepholes=True, **kwargs)
    if cell == "gru_reset_before":
        return fastrnn.GRU(input_size, hidden_size, reset_after=False, **kwargs)
    if cell == LSTM_PROJ:
        return fastrnn.LSTM(input_size, hidden_size, proj_size=proj_size(hidden_size), **kwargs)
    return {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell](input_size, hidden_size, **kwargs)


def has_c(cell):
    """True for the cells whose state is ``(h, c)`` (the LSTMs)."""
    return CELL_TABLE[engine_cell(cell)].has_cell_state


def make_weights(cell, input_size, hidden, num_layers, D, bias, dtype, rng, scale=1.0,
                 normal=False):
    """PyTorch-named weights of a stacked (bi)directional layer.

    Uniform in ``[-scale / sqrt(hidden), scale / sqrt(hidden)]`` (PyTorch's default for
    ``scale=1``), or, with ``normal``, ``scale`` times standard normal draws (larger values,
    which the gradient tests use to reach the nonlinearities' curved parts).  ``LSTM_PROJ``
    has ``weight_hr_l{k}`` of :func:`proj_size` rows (when ``hidden > 1``).
    """
    G = GATES[cell]
    k = scale / np.sqrt(hidden)
    P = state_size(cell, hidden)
    w = {}
    for layer in range(num_layers):
        inp = input_size if layer == 0 else D * P
        for d in range(D):
            names = parameter_names(layer, d, bias)
            if CELL_TABLE[engine_cell(cell)].has_peepholes:
                names.append(peephole_name(layer, d))
            if P != hidden:
                names.append(projection_name(layer, d))
            for name in names:
                kind = name.split("_l")[0]
                shape = {"weight_ih": (G * hidden, inp), "weight_hh": (G * hidden, P),
                         "weight_peephole": (3 * hidden,),
                         "weight_hr": (P, hidden)}.get(kind, (G * hidden,))
                draw = scale * rng.standard_normal(shape) if normal else rng.uniform(-k, k, shape)
                if normal and kind == "weight_hr":  # h = m W_hr^T of the size of m (an LSTM's
                    draw /= np.sqrt(hidden)         # h): large h makes a chaotic recurrence
                w[name] = draw.astype(dtype)
    return w


def rel_err(got, want, floor=1e-30):
    """Max error relative to the largest entry of ``want``, or ``floor`` when that is smaller
    (a gradient that is exactly 0, e.g. dW_hh for T=1 from a zero state, is computed with
    rounding noise at the scale of the other gradients); 0 when both are None."""
    if want is None:
        assert got is None
        return 0.0
    assert got.shape == want.shape and got.dtype == want.dtype
    return float(np.max(np.abs(got - want), initial=0.0) / max(np.max(np.abs(want), initial=0.0),
                                                                 floor))


def _runnable_isas():
    from fastrnn import engine
    return engine.supported_isas()   # [] when the compiled engine is not built


#: the instruction sets whose kernels this CPU can run (best first)
ISAS = _runnable_isas()


@pytest.fixture(params=ISAS or [None])
def isa(request):
    """Run the test on the kernels of every instruction set this CPU can run, each forced
    through the dispatcher (``pytestmark = pytest.mark.usefixtures("isa")`` in a module)."""
    if request.param is None:
        pytest.skip("compiled engine not built")
    from fastrnn import engine
    with engine.use_isa(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def state_arrays(state):
    """The arrays of a layer's state: ``[h]``, or ``[h, c]`` for an LSTM."""
    return list(state) if isinstance(state, tuple) else [state]


def numerical_gradient(f, array, eps=1e-6):
    """Central finite differences of the scalar ``f()`` with respect to ``array`` (in place)."""
    grad = np.zeros_like(array)
    for idx in np.ndindex(array.shape):
        saved = array[idx]
        array[idx] = saved + eps
        up = f()
        array[idx] = saved - eps
        down = f()
        array[idx] = saved
        grad[idx] = (up - down) / (2 * eps)
    return grad
