"""Gradient-flow diagnostics: dL/dh_t per timestep."""
import numpy as np
import pytest

import fastrnn
from fastrnn.diagnostics import gradient_norms, hidden_gradient_norms


def test_tanh_rnn_norms_follow_the_bptt_recursion(rng):
    """dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) W_hh + dy_{t-1}, checked step by step."""
    layer = fastrnn.RNN(2, 4, bias=False, dtype="float64", seed=0, backend="reference")
    x = rng.standard_normal((1, 6, 2))
    dy = rng.standard_normal((1, 6, 4))
    norms = hidden_gradient_norms(layer, x, dy=dy)
    y, _ = layer(x)
    w_hh = layer.parameters()["weight_hh_l0"]
    g = dy[0, -1]
    expected = [np.linalg.norm(g)]
    for t in range(5, 0, -1):
        g = (g * (1 - y[0, t] ** 2)) @ w_hh + dy[0, t - 1]
        expected.append(np.linalg.norm(g))
    np.testing.assert_allclose(norms[0], expected[::-1], rtol=1e-12)


def test_gradients_vanish_in_a_tanh_rnn_but_not_in_an_irnn(rng):
    T = 60
    x = rng.standard_normal((8, T, 2)) * 0.1
    dstate = np.ones((1, 8, 16))                   # the loss sees only the last state
    tanh = fastrnn.RNN(2, 16, dtype="float64", seed=0)
    for p in tanh.parameters().values():
        p *= 0.5
    irnn = fastrnn.RNN(2, 16, nonlinearity="relu", dtype="float64", seed=0)
    fastrnn.init.apply(irnn, weight_hh=fastrnn.init.identity, bias=0.0)
    tanh_norms = hidden_gradient_norms(tanh, x, dstate=dstate)[0]
    irnn_norms = hidden_gradient_norms(irnn, x, dstate=dstate)[0]
    assert tanh_norms[0] / tanh_norms[-1] < 1e-6     # vanished over 60 steps
    assert 1e-2 < irnn_norms[0] / irnn_norms[-1] < 10  # identity recurrence: no exponential decay


def test_model_gradient_norms_with_lengths(rng):
    model = fastrnn.Sequential([
        fastrnn.LSTM(3, 5, dtype="float64", seed=0),
        fastrnn.GRU(5, 4, return_sequences=False, dtype="float64", seed=0),
        fastrnn.Dense(4, 1, dtype="float64", seed=0),
    ])
    x = rng.standard_normal((4, 7, 3))
    lengths = np.array([7, 3, 5, 1])
    norms = gradient_norms(model, x, rng.standard_normal(4), lengths=lengths, loss="mse")
    assert set(norms) == {0, 1}
    assert norms[0].shape == (1, 7) and norms[1].shape == (1, 7)
    assert np.all(norms[1][0] > 0) and np.all(np.isfinite(norms[0]))
    with pytest.raises(ValueError, match="needs dy or dstate"):
        hidden_gradient_norms(model.layers[0], x)
