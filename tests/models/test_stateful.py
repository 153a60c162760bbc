"""Stateful Sequential models (the final states of batch k start batch k + 1) and learnable
initial states."""
import itertools

import numpy as np
import pytest

import fastrnn
from fastrnn.optim import SGD, Adam
from conftest import (has_c, VARIANTS as CELLS, make_layer, numerical_gradient,  # noqa
                      state_arrays, state_size)  # (CELLS: the cells and the projected LSTM)

STREAMS, T, I, H = 3, 12, 2, 4


def _model(cell, backend, stateful=True, num_layers=2, **kw):
    return fastrnn.Sequential([
        make_layer(cell, I, H, num_layers=num_layers, dtype="float64", seed=0, backend=backend,
                   **kw),
        fastrnn.Dense(state_size(cell, H), 2, dtype="float64", seed=1),
    ], stateful=stateful)


def _chunks(a, k):
    """A stream batch ``(streams, T, ...)`` cut along time into ``k`` consecutive batches,
    stacked as rows: row ``j * streams + i`` is chunk ``j`` of stream ``i``."""
    return np.concatenate(np.split(a, k, axis=1))


@pytest.mark.parametrize("cell, backend", list(itertools.product(CELLS, ("reference",
                                                                         "compiled"))))
def test_stateful_predict_over_chunks_equals_one_call(cell, backend, rng):
    x = rng.standard_normal((STREAMS, T, I))
    whole = _model(cell, backend, stateful=False)
    want = whole.predict(x)
    _, want_state = whole.layers[0](x)
    model = _model(cell, backend)
    parts = [model.predict(chunk) for chunk in np.split(x, 4, axis=1)]   # 4 calls
    np.testing.assert_allclose(np.concatenate(parts, axis=1), want, rtol=1e-12, atol=1e-12)
    for got, w in zip(state_arrays(model.states[0]), state_arrays(want_state)):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-12)
    assert model.states[1] is None                  # the Dense carries nothing
    # one call on the chunks stacked as consecutive batches of 3 streams
    model.reset_states()
    stacked = model.predict(_chunks(x, 4), batch_size=STREAMS)
    np.testing.assert_allclose(np.concatenate(np.split(stacked, 4), axis=1), want, rtol=1e-12,
                               atol=1e-12)
    # reset_states: back to the start of the streams
    model.reset_states()
    assert model.states is None
    np.testing.assert_array_equal(model.predict(x[:, :3]), parts[0])


def test_stateful_streams_of_different_lengths_carry_their_last_valid_state(rng):
    x = rng.standard_normal((2, 8, I))
    lengths = np.array([8, 5])                      # stream 1 ends inside the second chunk
    whole = _model("gru", "compiled", stateful=False)
    _, want = whole.layers[0](x, lengths=lengths)
    model = _model("gru", "compiled")
    model.predict(x[:, :4])
    model.predict(x[:, 4:], lengths=[4, 1])
    model.predict(x[:, :2], lengths=[0, 0])         # nothing more: the states stay
    np.testing.assert_allclose(model.states[0], want, rtol=1e-12)
    evaluated = _model("gru", "compiled")           # evaluate carries the states too
    evaluated.evaluate(x[:, :4], np.zeros((2, 4, 2)), loss="mse")
    evaluated.evaluate(x[:, 4:], np.zeros((2, 4, 2)), lengths=[4, 1], loss="mse")
    np.testing.assert_allclose(evaluated.states[0], want, rtol=1e-12)


def test_stateful_refusals(rng):
    with pytest.raises(ValueError, match="stateful=True needs unidirectional recurrent layers"):
        fastrnn.Sequential([fastrnn.GRU(2, 3, bidirectional=True)], stateful=True)
    with pytest.raises(ValueError, match="stateful=True cuts the sequences into batches"):
        fastrnn.Sequential([fastrnn.GRU(2, 4), fastrnn.MultiHeadAttention(4, 2)], stateful=True)
    with pytest.raises(TypeError, match="stateful must be True or False"):
        fastrnn.Sequential([fastrnn.GRU(2, 3)], stateful=1)
    model = _model("lstm", "compiled")
    x = rng.standard_normal((6, 4, I))
    with pytest.raises(ValueError, match="batch_size=4 streams, so their number must be a "
                                         "multiple of it; got 6 rows"):
        model.predict(x, batch_size=4)
    model.predict(x[:2])
    with pytest.raises(ValueError, match="batch_size=3 differs from the 2 streams .* "
                                         "reset_states"):
        model.predict(x[:3])
    y = np.zeros((6, 4, 2))
    with pytest.raises(ValueError, match="shuffle must be False for a stateful model"):
        model.fit(x, y, loss="mse", optimizer="sgd", shuffle=True, verbose=0)
    with pytest.raises(ValueError, match="multiple of it; got 6 rows"):
        model.fit(x, y, loss="mse", optimizer="sgd", batch_size=4, verbose=0)


def _manual_stateful_fit(cell, backend, x_batches, y_batches, epochs, lr):
    """Stateful training worked by hand with the layers' own calls: each epoch from zeros,
    each batch from the previous batch's final state (a constant), forward, backward, SGD."""
    rnn, dense = _model(cell, backend, stateful=False).layers
    loss = fastrnn.losses.MeanSquaredError()
    for _ in range(epochs):
        state = None
        for xb, yb in zip(x_batches, y_batches):
            h, state = rnn(xb, state=state, training=True)
            out, _ = dense.model_forward(h, training=True)
            _, grad = loss(out, yb)
            rnn.backward(dense.backward(grad))
            for layer in (rnn, dense):
                for name, p in layer.parameters().items():
                    p -= lr * layer.grads[name]
    return (rnn, dense), state


@pytest.mark.parametrize("cell, backend", list(itertools.product(CELLS, ("reference",
                                                                         "compiled"))))
def test_stateful_fit_equals_the_loop_worked_by_hand(cell, backend, rng):
    x = rng.standard_normal((STREAMS, T, I))
    y = rng.standard_normal((STREAMS, T, 2))
    model = _model(cell, backend)
    model.fit(_chunks(x, 3), _chunks(y, 3), loss="mse", optimizer=SGD(lr=0.2), epochs=2,
              batch_size=STREAMS, verbose=0)
    layers, state = _manual_stateful_fit(cell, backend, np.split(x, 3, axis=1),
                                         np.split(y, 3, axis=1), 2, 0.2)
    for i, layer in enumerate(layers):
        for name, p in layer.parameters().items():
            np.testing.assert_allclose(model.parameters()[f"{i}.{name}"], p, rtol=1e-10,
                                       atol=1e-12)
    # the model is left with the states of its last training batch
    for got, want in zip(state_arrays(model.states[0]), state_arrays(state)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_stateful_truncated_fit_equals_stateful_fit_on_the_windows(rng):
    """truncate=w on a stateful model: the same updates as the windows given as batches."""
    x = rng.standard_normal((STREAMS, T, I))
    y = rng.standard_normal((STREAMS, T, 2))
    windows, truncated = _model("lstm", "compiled"), _model("lstm", "compiled")
    windows.fit(_chunks(x, 3), _chunks(y, 3), loss="mse", optimizer=SGD(lr=0.1), epochs=2,
                batch_size=STREAMS, verbose=0)
    truncated.fit(x, y, loss="mse", optimizer=SGD(lr=0.1), epochs=2, batch_size=STREAMS,
                  verbose=0, truncate=T // 3)
    for name, p in windows.parameters().items():
        np.testing.assert_allclose(truncated.parameters()[name], p, rtol=1e-10, atol=1e-12)
    for a, b in zip(state_arrays(truncated.states[0]), state_arrays(windows.states[0])):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_stateful_fit_validation_starts_from_the_initial_states(rng):
    x = rng.standard_normal((6, 4, I))
    y = rng.standard_normal((6, 4, 2))
    model = _model("gru", "compiled")
    history = model.fit(x, y, loss="mse", optimizer=SGD(lr=0.0), epochs=1, batch_size=2,
                        verbose=0, validation_data=(x, y), metrics=("mse",))
    carried = model.states
    model.reset_states()
    assert history["val_loss"][0] == pytest.approx(model.evaluate(x, y, batch_size=2)["loss"],
                                                   rel=1e-12)
    model.reset_states()
    model.predict(x, batch_size=2)                  # lr=0: the training pass's states
    np.testing.assert_allclose(model.states[0], carried[0], rtol=1e-12)


def test_stateful_flag_is_saved(tmp_path, rng):
    model = _model("rnn_tanh", "compiled")
    model.save(tmp_path / "s.frnn")
    assert fastrnn.load_model(tmp_path / "s.frnn").stateful is True
    assert fastrnn.load_model(tmp_path / "s.frnn").states is None


# ---------------------------------------------------------------------- learned initial state

@pytest.mark.parametrize("backend", ["reference", "compiled"])
@pytest.mark.parametrize("cell, bidirectional", list(itertools.product(CELLS, (False, True))))
def test_learned_initial_state_gradient_matches_finite_differences(cell, bidirectional,
                                                                   backend, rng):
    layer = make_layer(cell, I, 3, num_layers=2, bidirectional=bidirectional, dtype="float64",
                       seed=0, backend=backend, learn_initial_state=True)
    params = layer.parameters()
    names = ["h0", "c0"] if has_c(cell) else ["h0"]
    D = 2 if bidirectional else 1
    P = state_size(cell, 3)     # h0 of the projection's width, c0 of the hidden size
    assert list(params)[-len(names):] == names
    for name in names:
        width = P if name == "h0" else 3
        assert params[name].shape == (2 * D, width)
        params[name][...] = rng.standard_normal((2 * D, width))
    x = rng.standard_normal((4, 5, I))
    lengths = np.array([5, 0, 3, 2])
    wy = rng.standard_normal((4, 5, D * P))

    def loss():
        y, s = layer(x, lengths=lengths)
        return np.sum(y * wy) + sum(np.sum(a ** 2) for a in state_arrays(s))

    y, s = layer(x, lengths=lengths, training=True)
    layer.backward(wy, tuple(2 * a for a in state_arrays(s)) if has_c(cell) else 2 * s)
    for name in params:
        numeric = numerical_gradient(loss, params[name])
        err = np.linalg.norm(layer.grads[name] - numeric) / max(np.linalg.norm(numeric), 1e-12)
        assert err < 1e-6, name
    # an explicit initial state: no gradient for the learned one
    state = layer.check_state(None, 4)
    layer(x, state=state if has_c(cell) else state[0], training=True)
    layer.backward(wy)
    assert all((layer.grads[name] == 0).all() for name in names)


def test_learned_initial_state_is_used_by_step_and_round_trips(rng, tmp_path):
    lstm = fastrnn.LSTM(I, H, num_layers=2, dtype="float64", seed=0, learn_initial_state=True)
    for name in ("h0", "c0"):
        lstm.parameters()[name][...] = rng.standard_normal((2, H))
    x = rng.standard_normal((3, 1, I))
    y, _ = lstm(x)
    y_t, _ = lstm.step(x[:, 0])
    np.testing.assert_allclose(y_t, y[:, 0], rtol=1e-12)
    plain = fastrnn.LSTM(I, H, num_layers=2, dtype="float64", seed=0)
    assert list(lstm.state_dict())[:len(plain.state_dict())] == list(plain.state_dict())
    np.testing.assert_array_equal(lstm.state_dict()["weight_hh_l1"],
                                  plain.state_dict()["weight_hh_l1"])   # the same draws
    h0 = lstm.parameters()["h0"].copy()
    lstm.load_state_dict(plain.state_dict())        # a PyTorch state_dict: h0, c0 stay
    np.testing.assert_array_equal(lstm.parameters()["h0"], h0)
    assert "learn_initial_state=True" in repr(lstm)
    model = fastrnn.Sequential([lstm, fastrnn.Dense(H, 1, dtype="float64")])
    assert "0.c0" in model.parameters()
    total = sum(p.size for p in model.parameters().values())
    assert f"total parameters: {total}" in model.summary(print_fn=None)
    model.save(tmp_path / "m.frnn")
    loaded = fastrnn.load_model(tmp_path / "m.frnn")
    assert loaded.layers[0].learn_initial_state
    np.testing.assert_array_equal(loaded.parameters()["0.h0"], model.parameters()["0.h0"])
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_onnx_export_refuses_a_learned_initial_state(tmp_path):
    pytest.importorskip("onnx")
    import fastrnn.onnx

    with pytest.raises(ValueError, match="learn_initial_state"):
        fastrnn.onnx.export(fastrnn.GRU(2, 3, learn_initial_state=True), tmp_path / "m.onnx")


@pytest.mark.parametrize("backend", ["reference", "compiled"])
def test_learned_initial_state_trains_what_a_zero_state_cannot(backend):
    """Empty sequences (length 0) whose targets differ from what a zero state gives: only a
    learned initial state can fit them (no biases anywhere)."""
    x = np.zeros((8, 3, 1))
    y = np.tile([[0.7, -0.4]], (8, 1))

    def trained(learn):
        model = fastrnn.Sequential([
            fastrnn.GRU(1, 4, bias=False, dtype="float64", seed=0, backend=backend,
                        return_sequences=False, learn_initial_state=learn),
            fastrnn.Dense(4, 2, bias=False, dtype="float64", seed=1),
        ])
        history = model.fit(x, y, lengths=np.zeros(8, int), loss="mse",
                            optimizer=Adam(lr=0.05), epochs=150, batch_size=8, verbose=0)
        return history["loss"]

    learned, fixed = trained(True), trained(False)
    assert learned[-1] < 1e-3 * learned[0]
    assert fixed[-1] == pytest.approx(fixed[0])     # zero state, no bias: output stuck at 0


def test_stateful_fit_and_predict_on_an_iterable_of_batches_equal_arrays(rng):
    """A stateful model fed its consecutive batches by a generator (or a re-iterable) trains,
    predicts and evaluates as on the arrays: the states are carried from batch to batch and
    every epoch starts from the initial states."""
    x = rng.standard_normal((STREAMS, T, I))
    y = rng.standard_normal((STREAMS, T, 2))
    chunks_x, chunks_y = np.split(x, 3, axis=1), np.split(y, 3, axis=1)
    arrays, batches = _model("gru", "compiled"), _model("gru", "compiled")
    arrays.fit(_chunks(x, 3), _chunks(y, 3), loss="mse", optimizer=SGD(lr=0.2), epochs=2,
               batch_size=STREAMS, verbose=0)
    two_epochs = (pair for _ in range(2) for pair in zip(chunks_x, chunks_y))
    batches.fit(two_epochs, loss="mse", optimizer=SGD(lr=0.2), epochs=2, steps_per_epoch=3,
                verbose=0)
    for name, p in arrays.parameters().items():
        np.testing.assert_allclose(batches.parameters()[name], p, rtol=1e-10, atol=1e-12)
    for m in (arrays, batches):
        m.reset_states()
    want = arrays.predict(_chunks(x, 3), batch_size=STREAMS)
    got = batches.predict(iter(chunks_x))
    np.testing.assert_allclose(np.concatenate(np.split(got, 3), axis=1),
                               np.concatenate(np.split(want, 3), axis=1), rtol=1e-10)
    for m in (arrays, batches):
        m.reset_states()
    assert batches.evaluate(iter(zip(chunks_x, chunks_y)))["loss"] == pytest.approx(
        arrays.evaluate(_chunks(x, 3), _chunks(y, 3), batch_size=STREAMS)["loss"], rel=1e-10)


def test_pre_padded_batches_from_an_iterable(rng):
    """padding="pre" with an iterable of batches: each batch is shifted on its own, and
    predict pads the outputs of all its batches before their valid steps."""
    model = fastrnn.Sequential([fastrnn.LSTM(I, 5, seed=0), fastrnn.Dense(5, 2, seed=1)])
    x = rng.standard_normal((6, 5, I))
    lengths = np.array([5, 2, 3, 4, 1, 5])
    pre = fastrnn._masks.to_pre_padding(x, lengths)
    want = model.predict(pre, lengths=lengths, padding="pre")
    got = model.predict(iter([(pre[:3], lengths[:3]), (pre[3:], lengths[3:])]), padding="pre")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
