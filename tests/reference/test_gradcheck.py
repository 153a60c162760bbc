"""The reference BPTT against central finite differences, in float64.

The loss is a random linear function of every output (the whole sequence and the final
states), so each test checks the gradients for an arbitrary upstream gradient.
"""
import itertools
import zlib

import numpy as np
import pytest

from fastrnn import reference
from conftest import has_c, VARIANTS, engine_cell, make_layer, numerical_gradient

B, T, I, H = 3, 5, 2, 3
EPS = 1e-6


def dropout_masks(rng, num_layers, D, shape_y, p=0.4):
    """Fixed dropout masks (zeros and 1 / (1 - p)): between the layers and recurrent."""
    B_, T_, _ = shape_y

    def mask(*shape):
        return (rng.random(shape) >= p) / (1 - p)

    return ([mask(*shape_y) for _ in range(num_layers - 1)],
            mask(num_layers * D, B_, shape_y[2] // D))


def _loss_and_grads(cell, num_layers, bidirectional, lengths, with_state, seed, dropout=False):
    rng = np.random.default_rng(seed)
    layer = make_layer(cell, I, H, num_layers=num_layers, bidirectional=bidirectional,
                       dtype="float64", seed=seed, backend="reference")
    weights = layer.parameters()
    if cell == "rnn_relu":      # keep most units active, so that no gradient is zero by chance
        for name, p in weights.items():
            if name.startswith("bias"):
                p += 0.5
    D = 2 if bidirectional else 1
    P = layer.state_size        # the width of h (a projected LSTM's proj_size)
    x = rng.standard_normal((B, T, I))
    state_shape = (num_layers * D, B, P)
    c_shape = (num_layers * D, B, H)
    h0 = rng.standard_normal(state_shape) if with_state else None
    c0 = rng.standard_normal(c_shape) if with_state and has_c(cell) else None
    wy = rng.standard_normal((B, T, D * P))
    wh = rng.standard_normal(state_shape)
    wc = rng.standard_normal(c_shape)
    kw = dict(num_layers=num_layers, bidirectional=bidirectional)
    if dropout:
        kw["layer_masks"], kw["recurrent_masks"] = dropout_masks(rng, num_layers, D,
                                                                 (B, T, D * P))
    cell = engine_cell(cell)

    def loss():
        y, h_n, c_n, _ = reference.forward(cell, x, weights, h0, c0, lengths, **kw)
        total = np.sum(y * wy) + np.sum(h_n * wh)
        return total + (np.sum(c_n * wc) if c_n is not None else 0.0)

    _, _, _, cache = reference.forward(cell, x, weights, h0, c0, lengths, **kw)
    dx, dh0, dc0, grads = reference.backward(cache, wy, wh, wc if has_c(cell) else None)
    checks = [("x", x, dx)] + [(n, weights[n], grads[n]) for n in weights]
    if with_state:
        checks.append(("h0", h0, dh0))
        if has_c(cell):
            checks.append(("c0", c0, dc0))
    return loss, checks


@pytest.mark.parametrize(
    "cell, num_layers, bidirectional, variable, with_state",
    list(itertools.product(VARIANTS, (1, 2), (False, True), (False, True), (False, True))),
)
def test_gradients_match_finite_differences(cell, num_layers, bidirectional, variable,
                                            with_state):
    lengths = np.array([T, 2, 4]) if variable else None
    seed = zlib.crc32(repr((cell, num_layers, bidirectional, variable, with_state)).encode())
    loss, checks = _loss_and_grads(cell, num_layers, bidirectional, lengths, with_state, seed)
    for name, array, analytic in checks:
        numeric = numerical_gradient(loss, array, EPS)
        scale = max(np.linalg.norm(numeric), np.linalg.norm(analytic), 1e-12)
        rel = np.linalg.norm(analytic - numeric) / scale
        assert rel < 1e-6, f"{name}: relative error {rel:.2e}"
        assert np.linalg.norm(numeric) > 0 or name.startswith("bias"), f"{name}: zero gradient"


@pytest.mark.parametrize("cell, num_layers, bidirectional",
                         list(itertools.product(VARIANTS, (1, 3), (False, True))))
def test_gradients_with_dropout_masks_match_finite_differences(cell, num_layers, bidirectional):
    """Fixed dropout masks between the layers and on the recurrent input h_{t-1}."""
    lengths = np.array([T, 2, 4])
    seed = zlib.crc32(repr((cell, num_layers, bidirectional, "dropout")).encode())
    loss, checks = _loss_and_grads(cell, num_layers, bidirectional, lengths, True, seed,
                                   dropout=True)
    for name, array, analytic in checks:
        numeric = numerical_gradient(loss, array, EPS)
        scale = max(np.linalg.norm(numeric), np.linalg.norm(analytic), 1e-12)
        assert np.linalg.norm(analytic - numeric) / scale < 1e-6, name


def test_dropout_masks_change_what_they_should():
    """A mask of ones changes nothing; a zero recurrent mask makes every step see h = 0 in
    W_hh (the same as zero recurrent weights); a zero layer mask cuts layer 2 from layer 1."""
    rng = np.random.default_rng(5)
    layer = make_layer("gru", I, H, num_layers=2, dtype="float64", seed=5, backend="reference")
    w = layer.parameters()
    x = rng.standard_normal((B, T, I))
    plain = reference.forward("gru", x, w, num_layers=2)
    ones = reference.forward("gru", x, w, num_layers=2, layer_masks=[np.ones((B, T, H))],
                             recurrent_masks=np.ones((2, B, H)))
    np.testing.assert_array_equal(plain[0], ones[0])
    no_rec = reference.forward("gru", x, w, num_layers=2, recurrent_masks=np.zeros((2, B, H)))
    w0 = dict(w, weight_hh_l0=0 * w["weight_hh_l0"], weight_hh_l1=0 * w["weight_hh_l1"])
    np.testing.assert_allclose(no_rec[0], reference.forward("gru", x, w0, num_layers=2)[0])
    cut = reference.forward("gru", x, w, num_layers=2, layer_masks=[np.zeros((B, T, H))])
    other = reference.forward("gru", 2 * x, w, num_layers=2, layer_masks=[np.zeros((B, T, H))])
    np.testing.assert_array_equal(cut[0], other[0])
    assert not np.array_equal(cut[0], plain[0])


def test_padding_gets_no_gradient_and_no_output():
    """Steps past a sequence's length neither produce output nor receive gradient."""
    lengths = np.array([T, 2, 4])
    loss, checks = _loss_and_grads("lstm", 2, True, lengths, True, 7)
    _, x, dx = checks[0]
    for b, n in enumerate(lengths):
        assert np.all(dx[b, n:] == 0)
    layer = make_layer("lstm", I, H, num_layers=2, bidirectional=True, dtype="float64", seed=7,
                       backend="reference")
    y, _ = layer(x, lengths=lengths)
    for b, n in enumerate(lengths):
        assert np.all(y[b, n:] == 0)
