"""Initialisers: shapes, bounds, orthogonality, identity, forget bias, reproducibility."""
import numpy as np
import pytest

import fastrnn
from fastrnn import init
from fastrnn.init import apply, glorot_uniform, identity, orthogonal, uniform_default, zeros

from conftest import make_layer


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shapes_dtypes_and_bounds(dtype):
    shape = (64, 16)
    w = uniform_default(16)(shape, 0, dtype)
    assert w.shape == shape and w.dtype == dtype
    assert np.abs(w).max() <= 0.25 and np.abs(w).max() > 0.2
    g = glorot_uniform(shape, 0, dtype)
    bound = np.sqrt(6 / (64 + 16))
    assert g.shape == shape and g.dtype == dtype
    assert np.abs(g).max() <= bound and np.abs(g).max() > 0.9 * bound
    assert np.abs(glorot_uniform(shape, 0, dtype, gain=2.0)).max() <= 2 * bound
    assert not zeros((3,), None, dtype).any() and zeros((3,), None, dtype).dtype == dtype


@pytest.mark.parametrize("shape", [(8, 8), (12, 5), (5, 12)])
def test_orthogonal(shape):
    q = orthogonal(shape, rng=1, dtype="float64")
    assert q.shape == shape
    small = min(shape)
    gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-12)
    q2 = orthogonal(shape, rng=1, dtype="float64", gain=3.0)
    np.testing.assert_allclose(q2, 3 * q, rtol=1e-12)


def test_identity():
    np.testing.assert_array_equal(identity((3, 3)), np.eye(3))
    np.testing.assert_array_equal(identity((2, 3), gain=0.5), 0.5 * np.eye(2, 3))
    with pytest.raises(ValueError, match="two dimensions"):
        identity((2, 2, 2))


def test_same_rng_seed_same_values():
    for f in (uniform_default(4), glorot_uniform, orthogonal):
        np.testing.assert_array_equal(f((6, 4), 5), f((6, 4), 5))
        np.testing.assert_array_equal(f((6, 4), np.random.default_rng(5)), f((6, 4), 5))
        assert not np.array_equal(f((6, 4), 5), f((6, 4), 6))


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_apply_orthogonal_recurrent_blocks(cell):
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, dtype="float64")
    live = layer.parameters()
    before = {k: v for k, v in live.items()}
    apply(layer, weight_ih="glorot_uniform", weight_hh=orthogonal, bias=0.0, seed=0)
    params = layer.parameters()
    gates = {"rnn_tanh": 1, "lstm": 4, "gru": 3}[cell]
    for name, p in params.items():
        assert p is before[name]                      # written in place
        if name.startswith("weight_hh"):
            assert p.shape == (gates * 5, 5)
            for g in range(gates):
                block = p[g * 5:(g + 1) * 5]
                np.testing.assert_allclose(block.T @ block, np.eye(5), atol=1e-12)
        elif name.startswith("weight_ih"):
            bound = np.sqrt(6 / (p.shape[1] + 5))
            assert np.abs(p).max() <= bound
        else:
            assert not p.any()


def test_apply_leaves_the_projection_alone():
    """A projected LSTM: W_hh's gate blocks are (hidden, proj_size) (orthogonal columns), and
    weight_hr_l{k} keeps its values."""
    layer = make_layer("lstm_proj", 3, 6, num_layers=2, dtype="float64", seed=0)
    hr = {k: v.copy() for k, v in layer.parameters().items() if k.startswith("weight_hr")}
    assert sorted(hr) == ["weight_hr_l0", "weight_hr_l1"]
    apply(layer, weight_hh=orthogonal, bias=0.0, forget_bias=1.0, seed=0)
    params = layer.parameters()
    for name, p in hr.items():
        np.testing.assert_array_equal(params[name], p)
    for k in range(4):
        block = params["weight_hh_l0"][k * 6:(k + 1) * 6]          # (6, 4)
        np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-12)


def test_apply_reproduces_the_layer_default_with_the_same_seed():
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=11)
    expected = layer.state_dict()
    apply(layer, weight_ih=init.uniform_default(4), weight_hh="uniform_default",
          bias="uniform_default", seed=12)
    assert not np.array_equal(layer.parameters()["weight_ih_l0"], expected["weight_ih_l0"])
    apply(layer, weight_ih="uniform_default", weight_hh="uniform_default",
          bias="uniform_default", seed=11)
    for name, p in layer.parameters().items():
        np.testing.assert_array_equal(p, expected[name])


def test_apply_seed_reproducibility():
    a = make_layer("gru", 3, 4, seed=1)
    b = make_layer("gru", 3, 4, seed=2)
    for layer in (a, b):
        apply(layer, weight_ih="glorot_uniform", weight_hh="orthogonal", bias="uniform_default",
              seed=42)
    for name, p in a.parameters().items():
        np.testing.assert_array_equal(p, b.parameters()[name])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forget_bias(dtype):
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    untouched = layer.parameters()["weight_hh_l1_reverse"].copy()
    before = layer.state_dict()
    apply(layer, forget_bias=1.0)
    params = layer.parameters()
    np.testing.assert_array_equal(params["weight_hh_l1_reverse"], untouched)
    for name, p in params.items():
        assert p.dtype == dtype
        if name.startswith("bias_"):
            want = 1.0 if name.startswith("bias_ih") else 0.0
            assert (p[4:8] == want).all()
            np.testing.assert_array_equal(p[:4], before[name][:4])   # other gates kept
            np.testing.assert_array_equal(p[8:], before[name][8:])
    totals = params["bias_ih_l0"] + params["bias_hh_l0"]
    assert (totals[4:8] == 1.0).all()


def test_bias_constant_is_the_total_bias():
    layer = fastrnn.GRU(2, 3, seed=0)
    apply(layer, bias=0.5)
    params = layer.parameters()
    assert (params["bias_ih_l0"] == 0.5).all() and (params["bias_hh_l0"] == 0).all()


def test_irnn_identity_for_relu_rnn():
    layer = fastrnn.RNN(3, 6, nonlinearity="relu", seed=0, dtype="float64")
    apply(layer, weight_ih=lambda s, r, d: 0.001 * r.standard_normal(s), weight_hh="identity",
          bias=0.0, seed=0)
    params = layer.parameters()
    np.testing.assert_array_equal(params["weight_hh_l0"], np.eye(6))
    assert np.abs(params["weight_ih_l0"]).max() < 0.01
    # With zero input the identity keeps the (non-negative) state unchanged.
    h0 = np.abs(np.random.default_rng(0).normal(size=(1, 2, 6)))
    _, h = layer(np.zeros((2, 5, 3)), h0, training=False)
    np.testing.assert_allclose(h, h0, rtol=1e-12)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(forget_bias=1.0), ValueError, "LSTM"),
    (dict(weight_hh="he_normal"), ValueError, "weight_hh"),
    (dict(bias=orthogonal), ValueError, "dimensions"),
    (dict(weight_ih=[1, 2]), TypeError, "weight_ih"),
    (dict(bias=float("nan")), ValueError, "bias"),
    (dict(seed="0"), TypeError, "seed"),
    (dict(weight_hh=lambda s, r, d: np.zeros((2, 2))), ValueError, "weight_hh_l0"),
])
def test_apply_errors(kwargs, error, words):
    layer = fastrnn.GRU(2, 3, seed=0)
    with pytest.raises(error) as info:
        apply(layer, **kwargs)
    assert words in str(info.value)


def test_apply_errors_on_layers():
    with pytest.raises(TypeError, match="layer"):
        apply(object(), weight_hh="orthogonal")
    no_bias = fastrnn.LSTM(2, 3, bias=False)
    with pytest.raises(ValueError, match="bias"):
        apply(no_bias, forget_bias=1.0)
    with pytest.raises(TypeError, match="forget_bias"):
        apply(fastrnn.LSTM(2, 3), forget_bias="1")


def test_initialiser_argument_errors():
    with pytest.raises(ValueError, match="dimensions"):
        glorot_uniform((4,))
    with pytest.raises(ValueError, match="dtype"):
        orthogonal((2, 2), dtype="int32")
    with pytest.raises(TypeError, match="rng"):
        orthogonal((2, 2), rng="seed")
    with pytest.raises(ValueError, match="hidden_size"):
        uniform_default(0)
    with pytest.raises(ValueError, match="shape"):
        zeros((2, 0))
