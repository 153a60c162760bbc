"""The lecture's worked forward pass, computed by hand and by the layer.

Vocabulary of 5 one-hot words, 3 hidden units, tanh:
``o_t = tanh(x_t W_i + o_{t-1} W_h + b)`` with ``o_0 = 0``, for the sentence "movie was good".
In the lecture's row-vector convention ``W_i`` is (5, 3) and ``W_h`` is (3, 3); PyTorch's layout
stores their transposes as ``weight_ih_l0`` and ``weight_hh_l0``.
"""
import math

import numpy as np
import pytest

import fastrnn

VOCAB = ["movie", "was", "good", "bad", "not"]
W_I = [  # row j: the contribution of word j to the 3 hidden units
    [0.5, -0.3, 0.1],
    [0.2, 0.4, -0.6],
    [-0.1, 0.8, 0.3],
    [0.7, -0.5, -0.2],
    [-0.4, 0.1, 0.9],
]
W_H = [
    [0.3, -0.2, 0.5],
    [0.1, 0.6, -0.4],
    [-0.7, 0.2, 0.2],
]
BIAS = [0.1, -0.1, 0.05]


def one_hot(word):
    return [1.0 if w == word else 0.0 for w in VOCAB]


def by_hand(sentence):
    """The recurrence written out unit by unit, with scalar arithmetic only."""
    o = [0.0, 0.0, 0.0]
    outputs = []
    for word in sentence:
        x = one_hot(word)
        o = [
            math.tanh(
                sum(x[i] * W_I[i][j] for i in range(5))
                + sum(o[k] * W_H[k][j] for k in range(3))
                + BIAS[j]
            )
            for j in range(3)
        ]
        outputs.append(o)
    return outputs


@pytest.mark.parametrize("backend", fastrnn.layers.BACKENDS)
def test_movie_was_good(backend):
    layer = fastrnn.RNN(5, 3, nonlinearity="tanh", dtype="float64", backend=backend)
    layer.load_state_dict({
        "weight_ih_l0": np.array(W_I).T,
        "weight_hh_l0": np.array(W_H).T,
        "bias_ih_l0": np.array(BIAS),
        "bias_hh_l0": np.zeros(3),
    })
    sentence = ["movie", "was", "good"]
    x = np.array([[one_hot(w) for w in sentence]])
    y, h_n = layer(x)
    expected = by_hand(sentence)
    # o_1 only sees "movie": tanh of W_i's first row plus the bias.
    assert expected[0] == pytest.approx([math.tanh(0.6), math.tanh(-0.4), math.tanh(0.15)])
    np.testing.assert_allclose(y[0], expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(h_n[0, 0], expected[-1], rtol=1e-12, atol=0)
