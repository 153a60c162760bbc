"""The layer API: parameters, state dicts, calls, lengths, streaming steps and backward."""
import numpy as np
import pytest

import fastrnn
from fastrnn import reference
from conftest import has_c, CELLS, make_layer, state_arrays

from fastrnn.cell_table import GATES


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_names_and_shapes_follow_pytorch(cell, bias):
    layer = make_layer(cell, 7, 5, num_layers=2, bidirectional=True, bias=bias, seed=0)
    g = GATES[cell] * 5
    expected = {}
    for k, in_size in ((0, 7), (1, 10)):
        for sfx in ("", "_reverse"):
            expected[f"weight_ih_l{k}{sfx}"] = (g, in_size)
            expected[f"weight_hh_l{k}{sfx}"] = (g, 5)
            if bias:
                expected[f"bias_ih_l{k}{sfx}"] = (g,)
                expected[f"bias_hh_l{k}{sfx}"] = (g,)
            if cell == "lstm_peephole":     # after each layer-direction's PyTorch parameters
                expected[f"weight_peephole_l{k}{sfx}"] = (15,)
    got = {name: p.shape for name, p in layer.parameters().items()}
    assert got == expected
    assert list(got) == list(expected)  # PyTorch's order too


def test_default_init_is_uniform_within_one_over_sqrt_hidden_and_seeded():
    a = fastrnn.LSTM(4, 16, seed=3)
    b = fastrnn.LSTM(4, 16, seed=3)
    c = fastrnn.LSTM(4, 16, seed=4)
    for name, p in a.parameters().items():
        assert p.dtype == np.float32
        assert np.abs(p).max() <= 0.25
        assert np.abs(p).max() > 0.2          # spread over the whole range, not a tiny one
        np.testing.assert_array_equal(p, b.parameters()[name])
        assert not np.array_equal(p, c.parameters()[name])


def test_state_dict_is_a_copy_and_load_writes_into_live_arrays():
    layer = fastrnn.GRU(3, 4, seed=0)
    live = layer.parameters()["weight_hh_l0"]
    sd = layer.state_dict()
    sd["weight_hh_l0"][:] = 0
    assert np.abs(live).sum() > 0             # the copy did not alias
    layer.load_state_dict(sd)
    assert layer.parameters()["weight_hh_l0"] is live
    assert np.all(live == 0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_call_shapes_and_dtypes(cell, dtype, rng):
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    x = rng.standard_normal((5, 6, 3))              # float64 input, cast to the layer's dtype
    y, state = layer(x)
    assert y.shape == (5, 6, 8) and y.dtype == np.dtype(dtype)
    h = state[0] if has_c(cell) else state
    assert h.shape == (4, 5, 4) and h.dtype == np.dtype(dtype)
    if has_c(cell):
        assert state[1].shape == (4, 5, 4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_equal_running_each_sequence_alone(cell, bidirectional, rng):
    """A padded batch with lengths gives what each sequence gives on its own, unpadded."""
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=bidirectional, dtype="float64",
                       seed=2, backend="reference")
    lengths = np.array([2, 7, 1, 5])
    x = rng.standard_normal((4, 7, 3))
    x_padded = x.copy()
    for b, n in enumerate(lengths):
        x_padded[b, n:] = 1e3                     # garbage in the padding must not matter
    y, state = layer(x_padded, lengths=lengths)
    for b, n in enumerate(lengths):
        y_b, state_b = layer(x[b:b + 1, :n])
        np.testing.assert_allclose(y[b:b + 1, :n], y_b, rtol=1e-12, atol=1e-14)
        assert np.all(y[b, n:] == 0)
        for s, s_b in zip(state_arrays(state), state_arrays(state_b)):
            np.testing.assert_allclose(s[:, b:b + 1], s_b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend", fastrnn.layers.BACKENDS)
def test_step_over_time_equals_one_call(cell, backend, rng):
    layer = make_layer(cell, 3, 5, num_layers=2, dtype="float64", seed=3, backend=backend)
    x = rng.standard_normal((2, 6, 3))
    y, final = layer(x)
    state = None
    for t in range(6):
        y_t, state = layer.step(x[:, t], state)
        np.testing.assert_allclose(y_t, y[:, t], rtol=1e-10, atol=1e-12)
    for a, b in zip(state_arrays(final), state_arrays(state)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_fills_grads_like_the_reference(cell, rng):
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=4)
    x = rng.standard_normal((3, 5, 3))
    lengths = np.array([5, 3, 1])
    y, state = layer(x, lengths=lengths, training=True)
    dy = rng.standard_normal(y.shape)
    dx, dstate0 = layer.backward(dy)
    assert set(layer.grads) == set(layer.parameters())
    _, _, _, cache = reference.forward(cell, x, layer.parameters(), lengths=lengths,
                                       num_layers=2, bidirectional=True)
    ref_dx, ref_dh0, ref_dc0, ref_grads = reference.backward(cache, dy)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-14)
    dh0 = dstate0[0] if has_c(cell) else dstate0
    np.testing.assert_allclose(dh0, ref_dh0, rtol=1e-12, atol=1e-14)
    for name, g in ref_grads.items():
        np.testing.assert_allclose(layer.grads[name], g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
@pytest.mark.parametrize("cell", CELLS)
def test_backward_without_input_grad(cell, backend, rng):
    """``input_grad=False``: dx is None, every other gradient is what the full backward gives
    (two layers, both directions: layer 1's input gradient still flows into layer 0)."""
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=4,
                       backend=backend)
    x = rng.standard_normal((3, 5, 3))
    lengths = np.array([5, 3, 1])
    y, _ = layer(x, lengths=lengths, training=True)
    dy = rng.standard_normal(y.shape)
    dx, full0 = layer.backward(dy)
    full = {k: v.copy() for k, v in layer.grads.items()}
    none, part0 = layer.backward(dy, input_grad=False)
    assert dx is not None and none is None
    for a, b in zip(state_arrays(full0), state_arrays(part0)):
        np.testing.assert_array_equal(a, b)
    assert set(layer.grads) == set(full)
    for name, g in full.items():
        np.testing.assert_array_equal(layer.grads[name], g)


def test_backward_of_the_final_state_only(rng):
    """dy=None with a gradient on the final (h, c): only the last valid steps are seeded."""
    layer = fastrnn.LSTM(2, 3, dtype="float64", seed=5)
    x = rng.standard_normal((2, 4, 2))
    layer(x, training=True)
    dh = rng.standard_normal((1, 2, 3))
    dx, (dh0, dc0) = layer.backward(None, (dh, None))
    assert dx.shape == x.shape and dh0.shape == (1, 2, 3) and dc0.shape == (1, 2, 3)
    assert np.abs(dx[:, -1]).sum() > 0


def test_float64_end_to_end(rng):
    layer = fastrnn.GRU(2, 3, dtype="float64", seed=6)
    x = rng.standard_normal((2, 3, 2))
    y, h = layer(x, training=True)
    dx, dh0 = layer.backward(np.ones_like(y))
    assert {a.dtype for a in (y, h, dx, dh0, *layer.grads.values())} == {np.dtype(np.float64)}


def test_repr_names_the_configuration():
    text = repr(fastrnn.RNN(3, 4, nonlinearity="relu", num_layers=2, backend="reference"))
    assert text.startswith("RNN(3, 4, num_layers=2, nonlinearity='relu'")
