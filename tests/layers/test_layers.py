"""The layer API: parameters, state dicts, calls, lengths, streaming steps and backward."""
import numpy as np
import pytest

import fastrnn
from fastrnn import reference
from conftest import (has_c, GATES, LSTM_PROJ, VARIANTS, engine_cell, make_layer,
                      state_arrays, state_size)

CELLS = VARIANTS            # the cells, and the projected LSTM


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_names_and_shapes_follow_pytorch(cell, bias):
    layer = make_layer(cell, 7, 5, num_layers=2, bidirectional=True, bias=bias, seed=0)
    g = GATES[cell] * 5
    P = state_size(cell, 5)         # the width of h: proj_size (3) for the projected LSTM
    expected = {}
    for k, in_size in ((0, 7), (1, 2 * P)):
        for sfx in ("", "_reverse"):
            expected[f"weight_ih_l{k}{sfx}"] = (g, in_size)
            expected[f"weight_hh_l{k}{sfx}"] = (g, P)
            if bias:
                expected[f"bias_ih_l{k}{sfx}"] = (g,)
                expected[f"bias_hh_l{k}{sfx}"] = (g,)
            if cell == "lstm_peephole":     # after each layer-direction's PyTorch parameters
                expected[f"weight_peephole_l{k}{sfx}"] = (15,)
            if cell == LSTM_PROJ:           # as in PyTorch, after the biases
                expected[f"weight_hr_l{k}{sfx}"] = (P, 5)
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
    P = state_size(cell, 4)
    x = rng.standard_normal((5, 6, 3))              # float64 input, cast to the layer's dtype
    y, state = layer(x)
    assert y.shape == (5, 6, 2 * P) and y.dtype == np.dtype(dtype)
    h = state[0] if has_c(cell) else state
    assert h.shape == (4, 5, P) and h.dtype == np.dtype(dtype)
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
    _, _, _, cache = reference.forward(engine_cell(cell), x, layer.parameters(),
                                       lengths=lengths, num_layers=2, bidirectional=True)
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


# ------------------------------------------------------------------ LSTM(proj_size=P)

@pytest.mark.parametrize("kwargs, error, match", [
    ({"proj_size": -1}, ValueError, "proj_size must be 0"),
    ({"proj_size": 5}, ValueError, "proj_size must be smaller than hidden_size"),
    ({"proj_size": 7}, ValueError, "proj_size=7 and hidden_size=5"),
    ({"proj_size": 2.0}, TypeError, "proj_size must be an integer"),
    ({"proj_size": True}, TypeError, "proj_size must be an integer"),
    ({"proj_size": 2, "peepholes": True}, ValueError, "peepholes or a projection"),
])
def test_proj_size_is_validated(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastrnn.LSTM(3, 5, **kwargs)


def test_proj_size_sizes_states_and_repr():
    layer = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=np.int64(2))
    assert layer.proj_size == 2 and layer.state_size == 2 and layer.hidden_size == 5
    assert fastrnn.LSTM(3, 5).state_size == 5 and fastrnn.GRU(3, 5).proj_size == 0
    assert "proj_size=2" in repr(layer) and layer.get_config()["proj_size"] == 2
    assert layer.output_shape((7, 4, 3)) == (7, 4, 4)
    with pytest.raises(ValueError, match=r"state\[0\] \(h\)"):     # h has P units, not H
        layer(np.zeros((1, 2, 3)), (np.zeros((4, 1, 5)), np.zeros((4, 1, 5))))
    with pytest.raises(ValueError, match=r"state\[1\] \(c\)"):     # c has H units
        layer(np.zeros((1, 2, 3)), (np.zeros((4, 1, 2)), np.zeros((4, 1, 2))))
    y, (h, c) = layer(np.zeros((1, 2, 3)), (np.zeros((4, 1, 2)), np.zeros((4, 1, 5))))
    assert y.shape == (1, 2, 4) and h.shape == (4, 1, 2) and c.shape == (4, 1, 5)


def _same_training_call(layers, x, lengths, **call):
    """Outputs, input and state gradients and parameter gradients of one training call of
    each layer (the same masks drawn: the layers share their seed)."""
    out = []
    for layer in layers:
        y, state = layer(x, lengths=lengths, training=True, **call)
        dy = np.cos(np.arange(y.size)).reshape(y.shape)
        dx, dstate = layer.backward(dy, tuple(np.ones_like(s) for s in state))
        out.append((y, *state, dx, *dstate, *[layer.grads[n] for n in sorted(layer.grads)]))
    return out


@pytest.mark.parametrize("options", [
    {"dropout": 0.3, "num_layers": 2}, {"recurrent_dropout": 0.4},
    {"learn_initial_state": True, "num_layers": 2}, {"padding": "pre"},
], ids=["dropout", "recurrent_dropout", "learn_initial_state", "padding_pre"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_projection_with_the_layer_options(options, bidirectional, rng):
    """Dropout between layers, recurrent dropout (masks of P units on h), a learned initial
    state (h0 of P units, c0 of H) and pre-padded batches work with a projection: the compiled
    engine gives the reference's outputs and gradients, with the same masks."""
    options = dict(options)
    call = {"padding": options.pop("padding")} if "padding" in options else {}
    layers = [fastrnn.LSTM(3, 6, proj_size=4, bidirectional=bidirectional, dtype="float64",
                           seed=8, backend=backend, **options)
              for backend in ("compiled", "reference")]
    if options.get("learn_initial_state"):
        assert layers[0].parameters()["h0"].shape == (2 * (1 + bidirectional), 4)
        assert layers[0].parameters()["c0"].shape == (2 * (1 + bidirectional), 6)
        for layer in layers:        # not zeros, so that they matter
            for name in ("h0", "c0"):
                layer.parameters()[name][:] = np.linspace(-1, 1, layer.parameters()[name].size
                                                          ).reshape(layer.parameters()[name].shape)
    x = rng.standard_normal((4, 5, 3))
    got, want = _same_training_call(layers, x, np.array([5, 2, 1, 4]), **call)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    if options.get("learn_initial_state"):
        assert np.abs(layers[0].grads["h0"]).sum() > 0


def test_projection_step_and_model_round_trip(tmp_path, rng):
    """Streaming steps (h of P units) equal a call; a model with a projected LSTM trains,
    saves and loads (proj_size in its configuration)."""
    layer = fastrnn.LSTM(3, 6, num_layers=2, proj_size=4, seed=9)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y, final = layer(x)
    state = None
    for t in range(5):
        y_t, state = layer.step(x[:, t], state)
        assert y_t.shape == (2, 4) and state[0].shape == (2, 2, 4) and state[1].shape == (2, 2, 6)
        np.testing.assert_allclose(y_t, y[:, t], rtol=1e-5, atol=1e-6)
    model = fastrnn.Sequential([fastrnn.LSTM(3, 6, proj_size=4, return_sequences=False, seed=1),
                                fastrnn.Dense(4, 2, seed=2)])
    labels = (x[:, -1, 0] > 0).astype(np.int64)
    model.fit(x, labels, loss="cce", optimizer="adam", epochs=2, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = fastrnn.load_model(tmp_path / "m.npz")
    assert loaded.layers[0].proj_size == 4
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
