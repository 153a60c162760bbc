"""Shared helpers for the tests."""
import numpy as np
import pytest

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


def make_layer(cell, input_size, hidden_size, **kwargs):
    """A layer of the given cell name ("rnn_tanh", "rnn_relu", "lstm", "gru")."""
    import fastrnn

    if cell.startswith("rnn_"):
        return fastrnn.RNN(input_size, hidden_size, nonlinearity=cell[4:], **kwargs)
    return {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell](input_size, hidden_size, **kwargs)


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
