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


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def state_arrays(state):
    """The arrays of a layer's state: ``[h]``, or ``[h, c]`` for an LSTM."""
    return list(state) if isinstance(state, tuple) else [state]
