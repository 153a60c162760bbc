"""Masks: empty sequences (length 0), pre-padded batches, and Embedding(mask_zero=True).

Empty sequences: the compiled engine (which runs lengths 1..T only; the layer runs the other
rows and fills the empty ones in) against the reference (which runs them natively), both
against finite differences. Pre-padding: a pre-padded batch gives what the same batch
post-padded gives, with the sequence outputs (and gradients) shifted.
"""
import itertools

import numpy as np
import pytest

import fastrnn
from fastrnn._masks import to_post_padding, to_pre_padding
from fastrnn.optim import SGD
from conftest import (has_c, VARIANTS as CELLS, make_layer, numerical_gradient, rel_err,  # noqa
                      state_arrays, state_size)  # (CELLS: the cells and the projected LSTM)

B, T, I, H = 5, 6, 3, 4
EMPTY_LENGTHS = np.array([0, T, 3, 0, 1])


def _pair(cell, num_layers, bidirectional, dtype, **kw):
    return [make_layer(cell, I, H, num_layers=num_layers, bidirectional=bidirectional,
                       dtype=dtype, seed=3, backend=backend, **kw)
            for backend in ("reference", "compiled")]


def _state(cell, shape, rng, dtype):
    """A state of ``shape`` (``(..., hidden)``; ``h`` of the projection's width)."""
    h = rng.standard_normal(shape[:-1] + (state_size(cell, shape[-1]),)).astype(dtype)
    return (h, rng.standard_normal(shape).astype(dtype)) if has_c(cell) else h


def _run(layer, x, state, lengths, dy, dstate, padding="post"):
    y, s = layer(x, state, lengths, training=True, padding=padding)
    dx, ds = layer.backward(dy, dstate)
    return y, state_arrays(s), dx, state_arrays(ds), layer.grads


@pytest.mark.parametrize("cell, num_layers, bidirectional, dtype", list(itertools.product(
    CELLS, (1, 2), (False, True), ("float32", "float64"))))
def test_empty_sequences_compiled_equals_reference(cell, num_layers, bidirectional, dtype, rng):
    ref, com = _pair(cell, num_layers, bidirectional, dtype)
    D = 2 if bidirectional else 1
    shape = (num_layers * D, B, H)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    state = _state(cell, shape, rng, dtype)
    dy = rng.standard_normal((B, T, D * state_size(cell, H))).astype(dtype)
    dstate = _state(cell, shape, rng, dtype)
    want = _run(ref, x, state, EMPTY_LENGTHS, dy, dstate)
    got = _run(com, x, state, EMPTY_LENGTHS, dy, dstate)
    tol = 1e-4 if dtype == "float32" else 1e-10
    for w, g in zip(want[:4], got[:4]):
        for a, b in zip(state_arrays(w) if not isinstance(w, list) else w,
                        state_arrays(g) if not isinstance(g, list) else g):
            assert rel_err(b, a) < tol
    assert set(want[4]) == set(got[4])
    for name in want[4]:
        assert rel_err(got[4][name], want[4][name]) < tol, name
    # the semantics, on both: initial state out, 0 outputs, gradients straight through
    empty = EMPTY_LENGTHS == 0
    for y, s, dx, ds, _ in (want, got):
        assert (y[empty] == 0).all() and (dx[empty] == 0).all()
        for final, initial in zip(s, state_arrays(state)):
            np.testing.assert_array_equal(final[:, empty], initial[:, empty])
        for d0, dn in zip(ds, state_arrays(dstate)):
            np.testing.assert_array_equal(d0[:, empty], dn[:, empty])


@pytest.mark.parametrize("backend", ["reference", "compiled"])
@pytest.mark.parametrize("cell", CELLS)
def test_a_batch_of_empty_sequences_only(cell, backend, rng):
    layer = make_layer(cell, I, H, num_layers=2, dtype="float64", seed=0, backend=backend)
    state = _state(cell, (2, 3, H), rng, "float64")
    y, s = layer(rng.standard_normal((3, 2, I)), state, [0, 0, 0], training=True)
    assert (y == 0).all()
    for a, b in zip(state_arrays(s), state_arrays(state)):
        np.testing.assert_array_equal(a, b)
    dx, ds = layer.backward(np.ones_like(y), state)
    assert (dx == 0).all()
    for a, b in zip(state_arrays(ds), state_arrays(state)):
        np.testing.assert_array_equal(a, b)
    assert all((g == 0).all() for g in layer.grads.values())
    assert set(layer.grads) == set(layer.parameters())


@pytest.mark.parametrize("backend", ["reference", "compiled"])
@pytest.mark.parametrize("cell, bidirectional", list(itertools.product(CELLS, (False, True))))
def test_empty_sequences_gradients_match_finite_differences(cell, bidirectional, backend, rng):
    layer = make_layer(cell, 2, 3, num_layers=2, bidirectional=bidirectional, dtype="float64",
                       seed=1, backend=backend)
    weights = layer.parameters()
    D = 2 if bidirectional else 1
    lengths = np.array([0, 4, 2])
    x = rng.standard_normal((3, 4, 2))
    state = _state(cell, (2 * D, 3, 3), rng, "float64")
    wy = rng.standard_normal((3, 4, D * state_size(cell, 3)))
    ws = _state(cell, (2 * D, 3, 3), rng, "float64")

    def loss():
        y, s = layer(x, state, lengths)
        return np.sum(y * wy) + sum(np.sum(a * w) for a, w in zip(state_arrays(s),
                                                                   state_arrays(ws)))

    layer(x, state, lengths, training=True)
    dx, ds = layer.backward(wy, ws)
    grads = layer.grads
    checks = [("x", x, dx)] + [(n, weights[n], grads[n]) for n in weights] + \
        [(f"state{i}", a, d) for i, (a, d) in enumerate(zip(state_arrays(state),
                                                            state_arrays(ds)))]
    for name, array, analytic in checks:
        numeric = numerical_gradient(loss, array)
        scale = max(np.linalg.norm(numeric), 1e-12)
        assert np.linalg.norm(analytic - numeric) / scale < 1e-6, name
    assert (dx[0] == 0).all()


@pytest.mark.parametrize("cell, num_layers, bidirectional, backend, dtype", list(
    itertools.product(CELLS, (1, 2), (False, True), ("reference", "compiled"),
                      ("float32", "float64"))))
def test_pre_padding_equals_post_padding_shifted(cell, num_layers, bidirectional, backend,
                                                 dtype, rng):
    layer = make_layer(cell, I, H, num_layers=num_layers, bidirectional=bidirectional,
                       dtype=dtype, seed=2, backend=backend)
    D = 2 if bidirectional else 1
    lengths = np.array([T, 2, 0, 5, 1])
    x_post = rng.standard_normal((B, T, I)).astype(dtype)
    x_post[np.arange(T) >= lengths[:, None]] = 7.0     # padding values never matter
    x_pre = to_pre_padding(x_post, lengths)
    state = _state(cell, (num_layers * D, B, H), rng, dtype)
    dy_post = rng.standard_normal((B, T, D * state_size(cell, H))).astype(dtype)
    post = _run(layer, x_post, state, lengths, dy_post, None)
    pre = _run(layer, x_pre, state, lengths, to_pre_padding(dy_post, lengths), None,
               padding="pre")
    np.testing.assert_array_equal(pre[0], to_pre_padding(post[0], lengths))
    for a, b in zip(pre[1] + pre[3], post[1] + post[3]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pre[2], to_pre_padding(post[2], lengths))
    for name in post[4]:
        np.testing.assert_array_equal(pre[4][name], post[4][name])
    valid = np.arange(T) >= (T - lengths)[:, None]      # pre-padded: the valid steps are last
    assert (pre[0][~valid] == 0).all() and (pre[2][~valid] == 0).all()


def test_shifts_are_inverse_and_keep_the_valid_steps(rng):
    a = rng.standard_normal((4, 5, 2))
    lengths = np.array([5, 0, 2, 4])
    post = to_post_padding(a, lengths)
    np.testing.assert_array_equal(to_pre_padding(post, lengths), a)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(post[b, :n], a[b, 5 - n:])
    x, got = fastrnn.text.pad_sequences([[1, 2, 3], [4]], padding="pre")
    np.testing.assert_array_equal(to_post_padding(x, got), [[1, 2, 3], [4, 0, 0]])


def test_padding_and_lengths_are_checked():
    layer = fastrnn.GRU(2, 3)
    x = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match="padding must be one of 'post', 'pre', got 'left'"):
        layer(x, lengths=[1, 2], padding="left")
    with pytest.raises(ValueError, match=r"lengths must be in 0\.\.3"):
        layer(x, lengths=[-1, 2])
    model = fastrnn.Sequential([fastrnn.GRU(2, 3)])
    with pytest.raises(ValueError, match="padding must be one of"):
        model.predict(x, padding="both")


# ---------------------------------------------------------------------- Embedding(mask_zero)

def test_compute_lengths_post_and_pre():
    emb = fastrnn.Embedding(10, 2, mask_zero=True)
    assert emb.compute_lengths([[3, 1, 0], [5, 0, 0], [0, 0, 0], [1, 2, 3]]).tolist() == \
        [2, 1, 0, 3]
    assert emb.compute_lengths([[0, 3, 1], [0, 0, 5], [0, 0, 0]], padding="pre").tolist() == \
        [2, 1, 0]


def test_compute_lengths_refuses_a_zero_between_tokens():
    emb = fastrnn.Embedding(10, 2, mask_zero=True)
    with pytest.raises(ValueError, match=r"x\[1\] has the padding token 0 at step 1, before a "
                                         r"non-zero token"):
        emb.compute_lengths([[1, 2, 0], [3, 0, 4]])
    with pytest.raises(ValueError, match=r"x\[0\] has the padding token 0 at step 1, after a "
                                         r"non-zero token"):
        emb.compute_lengths([[1, 0, 4]], padding="pre")
    with pytest.raises(ValueError, match="at step 2, after .* padding='post'"):
        emb.compute_lengths([[1, 2, 0, 0]], padding="pre")   # post-padded rows said "pre"
    with pytest.raises(ValueError, match="needs an Embedding with mask_zero=True"):
        fastrnn.Embedding(10, 2).compute_lengths([[1, 0]])


def test_mask_zero_and_padding_idx_agree():
    assert fastrnn.Embedding(5, 2, padding_idx=0, mask_zero=True).padding_idx == 0
    with pytest.raises(ValueError, match="padding_idx must be 0 or None with mask_zero=True"):
        fastrnn.Embedding(5, 2, padding_idx=3, mask_zero=True)
    with pytest.raises(TypeError, match="mask_zero must be True or False"):
        fastrnn.Embedding(5, 2, mask_zero=1)


def _token_model(mask_zero, return_sequences=True, backend="compiled", stateful=False):
    return fastrnn.Sequential([
        fastrnn.Embedding(12, 4, mask_zero=mask_zero, dtype="float64", seed=0),
        fastrnn.LSTM(4, 5, dtype="float64", seed=1, backend=backend,
                     return_sequences=return_sequences),
        fastrnn.Dense(5, 3, dtype="float64", seed=2),
    ], stateful=stateful)


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("backend", ["reference", "compiled"])
def test_mask_zero_lengths_equal_explicit_lengths(return_sequences, backend, rng):
    lengths = np.array([6, 3, 0, 1])
    tokens = rng.integers(1, 12, size=(4, 6))
    tokens[np.arange(6) >= lengths[:, None]] = 0
    masked = _token_model(True, return_sequences, backend)
    plain = _token_model(False, return_sequences, backend)
    want = plain.predict(tokens, lengths=lengths)
    np.testing.assert_array_equal(masked.predict(tokens), want)
    # pre-padded tokens: the same outputs, pre-padded
    pre = to_pre_padding(tokens, lengths)
    got = masked.predict(pre, padding="pre")
    np.testing.assert_array_equal(got, to_pre_padding(want, lengths) if return_sequences
                                  else want)
    # a ragged list: the zeros are padding too
    ragged = [list(row[:n]) for row, n in zip(tokens, lengths) if n] + [[5, 0]]
    width = max(len(r) for r in ragged)
    np.testing.assert_array_equal(masked.predict(ragged)[:3], want[[0, 1, 3]][:, :width]
                                  if return_sequences else want[[0, 1, 3]])
    with pytest.raises(ValueError, match=r"X\[0\] has the padding token 0"):
        masked.predict([[1, 0, 2]])


def test_mask_zero_fit_and_evaluate_equal_explicit_lengths(rng, tmp_path):
    lengths = np.array([5, 2, 4, 1, 3, 5])
    tokens = rng.integers(1, 12, size=(6, 5))
    tokens[np.arange(5) >= lengths[:, None]] = 0
    y = rng.integers(0, 3, size=6)
    masked, plain = _token_model(True, False), _token_model(False, False)
    for model, kw in ((masked, {}), (plain, {"lengths": lengths})):
        model.fit(tokens, y, loss="cce", optimizer=SGD(lr=0.1), epochs=2, batch_size=3,
                  verbose=0, **kw)
    for name, p in plain.parameters().items():
        np.testing.assert_array_equal(masked.parameters()[name], p)
    assert masked.evaluate(tokens, y) == plain.evaluate(tokens, y, lengths=lengths)
    masked.save(tmp_path / "m.frnn")
    loaded = fastrnn.load_model(tmp_path / "m.frnn")
    assert loaded.layers[0].mask_zero is True
    np.testing.assert_array_equal(loaded.predict(tokens), masked.predict(tokens))


# ---------------------------------------------------------------------- models: pre / empty

def _seq_model(backend, return_sequences=True):
    return fastrnn.Sequential([
        fastrnn.GRU(3, 4, num_layers=2, dtype="float64", seed=0, backend=backend,
                    return_sequences=return_sequences),
        fastrnn.Dense(4, 2, dtype="float64", seed=1),
    ])


@pytest.mark.parametrize("backend", ["reference", "compiled"])
def test_model_fit_predict_evaluate_pre_equal_post(backend, rng):
    lengths = np.array([6, 2, 5, 1, 4, 3])
    x = rng.standard_normal((6, 6, 3))
    y = rng.standard_normal((6, 6, 2))
    x_pre, y_pre = to_pre_padding(x, lengths), to_pre_padding(y, lengths)
    post, pre = _seq_model(backend), _seq_model(backend)
    kw = dict(loss="mse", epochs=2, batch_size=4, verbose=0, lengths=lengths,
              validation_data=(x[:2], y[:2], lengths[:2]))
    h_post = post.fit(x, y, optimizer=SGD(lr=0.1), **kw)
    kw["validation_data"] = (x_pre[:2], y_pre[:2], lengths[:2])
    h_pre = pre.fit(x_pre, y_pre, optimizer=SGD(lr=0.1), padding="pre", **kw)
    assert h_pre.history == h_post.history
    for name, p in post.parameters().items():
        np.testing.assert_array_equal(pre.parameters()[name], p)
    out = post.predict(x, lengths)
    np.testing.assert_array_equal(pre.predict(x_pre, lengths, padding="pre"),
                                  to_pre_padding(out, lengths))
    assert pre.evaluate(x_pre, y_pre, lengths, padding="pre") == post.evaluate(x, y, lengths)


def test_model_runs_empty_sequences(rng):
    x = rng.standard_normal((3, 4, 3))
    lengths = np.array([0, 4, 2])
    model = _seq_model("compiled", return_sequences=False)
    out = model.predict(x, lengths)
    dense = model.layers[1]
    np.testing.assert_allclose(out[0], dense.parameters()["bias"])    # from the zero state
    np.testing.assert_array_equal(out[1:], model.predict(x[1:], lengths[1:]))
    model.fit(x, rng.standard_normal((3, 2)), lengths=lengths, loss="mse", optimizer="sgd",
              verbose=0)
    with pytest.raises(ValueError, match="lengths must be >= 1 for a model with a "
                                         "GlobalAveragePooling1D layer"):
        fastrnn.Sequential([fastrnn.GRU(3, 4), fastrnn.GlobalAveragePooling1D()]).predict(
            x, lengths)
