"""Models: feed-forward layers, Sequential training, summary, files, callbacks, PyTorch parity."""
import numpy as np
import pytest

import fastrnn
import fastrnn.io as fastrnn_io
from fastrnn.callbacks import EarlyStopping, LearningRateScheduler, ModelCheckpoint
from fastrnn.optim import SGD, Adam, StepLR
from conftest import numerical_gradient


@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh", "relu", "softmax"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 3)])
def test_dense_gradients(activation, shape, rng):
    layer = fastrnn.Dense(3, 4, activation=activation, dtype="float64", seed=0)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(shape[:-1] + (4,))
    loss = lambda: np.sum(layer(x) * w)
    layer(x, training=True)
    dx = layer.backward(w)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    for name, p in layer.parameters().items():
        np.testing.assert_allclose(layer.grads[name], numerical_gradient(loss, p), rtol=1e-6,
                                   atol=1e-8)


def test_embedding_gradient_and_padding(rng):
    emb = fastrnn.Embedding(6, 3, padding_idx=0, dtype="float64", seed=0)
    assert np.all(emb.parameters()["weight"][0] == 0)
    tokens = np.array([[1, 2, 2, 0], [5, 0, 0, 0]])
    w = rng.standard_normal((2, 4, 3))
    emb(tokens, training=True)
    emb.backward(w)
    expected = numerical_gradient(lambda: np.sum(emb(tokens) * w), emb.parameters()["weight"])
    expected[0] = 0                                  # the padding vector is never trained
    np.testing.assert_allclose(emb.grads["weight"], expected, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"x must hold token ids in 0\.\.5"):
        emb(np.array([[6]]))
    with pytest.raises(TypeError, match="x must be integer token ids"):
        emb(np.array([[1.5]]))


def test_dropout_scales_kept_units_and_is_identity_at_inference():
    drop = fastrnn.Dropout(0.25, seed=0)
    x = np.ones((200, 50))
    y = drop(x, training=True)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    np.testing.assert_array_equal(drop.backward(np.ones_like(x)), y)
    assert drop(x) is x
    with pytest.raises(ValueError, match="p must be in"):
        fastrnn.Dropout(1.0)


def lecture_model():
    return fastrnn.Sequential([
        fastrnn.RNN(5, 3, return_sequences=False, seed=0),
        fastrnn.Dense(3, 1, activation="sigmoid", seed=0),
    ])


def test_summary_of_the_lecture_example_counts_27_weights():
    text = lecture_model().summary(print_fn=None)
    lines = text.splitlines()
    rnn_row = next(line for line in lines if "RNN" in line).split()
    dense_row = next(line for line in lines if "Dense" in line).split()
    assert rnn_row[-2:] == ["24", "6"]            # 15 + 9 weights; bias_ih + bias_hh
    assert dense_row[-2:] == ["3", "1"]
    assert "(None, 3)" in text and "(None, 1)" in text
    assert "weights: 27" in text and "biases: 7" in text


def sequence_data(rng, n=64, T=6):
    x = rng.standard_normal((n, T, 3))
    lengths = rng.integers(1, T + 1, size=n)
    y = (x[np.arange(n), lengths - 1, 0] > 0).astype(np.int64)
    return x, y, lengths


def small_classifier(seed=0, dtype="float64"):
    return fastrnn.Sequential([
        fastrnn.LSTM(3, 8, return_sequences=False, dtype=dtype, seed=seed),
        fastrnn.Dropout(0.1, seed=seed),
        fastrnn.Dense(8, 2, activation="softmax", dtype=dtype, seed=seed),
    ])


def test_fit_history_validation_and_progress(rng, capsys):
    x, y, lengths = sequence_data(rng)
    model = small_classifier()
    history = model.fit(x, y, lengths=lengths, loss="cce", optimizer=Adam(lr=0.05), epochs=3,
                        batch_size=16, validation_split=0.25, metrics=("accuracy",), verbose=1)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2] and model.epochs_trained == 3
    err = capsys.readouterr().err
    assert "epoch 3/3" in err and "seq/s" in err and "val_loss" in err
    model.fit(x, y, lengths=lengths, epochs=4, verbose=0)   # keeps loss and optimizer, goes on
    assert model.epochs_trained == 4
    assert capsys.readouterr().err == ""


def test_ragged_input_equals_padding_with_lengths(rng):
    model = fastrnn.Sequential([fastrnn.GRU(2, 4, dtype="float64", seed=1)])
    seqs = [rng.standard_normal((n, 2)) for n in (3, 1, 5)]
    padded = np.zeros((3, 5, 2))
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    np.testing.assert_array_equal(model.predict(seqs), model.predict(padded, lengths=[3, 1, 5]))


def test_save_load_round_trip_and_resume_equals_uninterrupted(tmp_path, rng):
    x, y, lengths = sequence_data(rng)
    kw = dict(lengths=lengths, batch_size=16, verbose=0, seed=3)
    straight = small_classifier()
    straight.fit(x, y, loss="cce", optimizer=Adam(lr=0.01), epochs=4, **kw)

    resumed = small_classifier()
    resumed.info = {"task": "demo", "classes": ["a", "b"]}
    path = tmp_path / "ckpt.npz"
    resumed.fit(x, y, loss="cce", optimizer=Adam(lr=0.01), epochs=2,
                callbacks=[ModelCheckpoint(path)], **kw)
    loaded = fastrnn.load_model(path)
    assert loaded.epochs_trained == 2 and isinstance(loaded.optimizer, Adam)
    assert loaded.info == {"task": "demo", "classes": ["a", "b"]}
    np.testing.assert_array_equal(loaded.predict(x, lengths=lengths),
                                  resumed.predict(x, lengths=lengths))
    loaded.fit(x, y, epochs=4, **kw)
    for name, p in straight.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[name], p)


def test_save_is_atomic_and_bad_files_are_refused(tmp_path, rng, monkeypatch):
    model = lecture_model()
    path = tmp_path / "model.npz"
    model.save(path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="model.npz"):
        fastrnn.load_model(path)
    np.savez(path, weight=np.zeros(3))                  # a foreign .npz
    with pytest.raises(ValueError):
        fastrnn.load_model(path)
    path.write_bytes(good)

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(fastrnn_io.os, "replace", crash)
    with pytest.raises(OSError):
        small_classifier().save(path)
    assert path.read_bytes() == good                    # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_early_stopping_restores_best_weights(rng):
    x, y, lengths = sequence_data(rng)
    model = small_classifier()
    stop = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    # a huge learning rate makes validation loss worse after the first epochs
    history = model.fit(x, y, lengths=lengths, loss="cce", optimizer=SGD(lr=50.0), epochs=30,
                        batch_size=8, validation_split=0.25, callbacks=[stop], verbose=0)
    assert stop.stopped_epoch is not None and len(history.epoch) < 30
    best = int(np.argmin(history["val_loss"]))
    assert history["val_loss"][best] == stop.best


def test_learning_rate_schedule_callback(rng):
    x, y, lengths = sequence_data(rng)
    opt = SGD(lr=0.1)
    model = small_classifier()
    model.fit(x, y, lengths=lengths, loss="cce", optimizer=opt, epochs=4, verbose=0,
              callbacks=[LearningRateScheduler(StepLR(opt, step_size=2, gamma=0.5))])
    assert opt.lr == pytest.approx(0.025)


def test_fit_errors_name_the_argument(rng):
    x, y, lengths = sequence_data(rng)
    model = small_classifier()
    with pytest.raises(ValueError, match="needs a loss and an optimizer"):
        model.fit(x, y)
    with pytest.raises(ValueError, match="y must have one target per sequence"):
        model.fit(x, y[:-1], loss="cce", optimizer="sgd")
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, loss="cce", optimizer="sgd", validation_split=1.5)
    with pytest.raises(ValueError, match="Dense"):
        fastrnn.Sequential([fastrnn.LSTM(3, 2)]).fit(x, y, loss="cce", optimizer="sgd")
    with pytest.raises(TypeError, match=r"layers\[1\] must be a fastrnn layer"):
        fastrnn.Sequential([fastrnn.LSTM(3, 2), object()])


@pytest.mark.parametrize("make_optimizer", [
    lambda torch, params: (SGD(lr=0.5, momentum=0.9), torch.optim.SGD(params, lr=0.5,
                                                                      momentum=0.9)),
    lambda torch, params: (Adam(lr=0.05), torch.optim.Adam(params, lr=0.05)),
], ids=["sgd", "adam"])
def test_training_matches_pytorch_for_ten_steps(make_optimizer, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, batch_first=True).double()
    head = torch.nn.Linear(5, 4).double()
    model = fastrnn.Sequential([
        fastrnn.LSTM(3, 5, return_sequences=False, dtype="float64"),
        fastrnn.Dense(5, 4, dtype="float64"),
    ])
    model.layers[0].load_state_dict({k: v.numpy() for k, v in lstm.state_dict().items()})
    for name, v in head.state_dict().items():
        model.layers[1].parameters()[name][...] = v.numpy()
    ours, theirs = make_optimizer(torch, list(lstm.parameters()) + list(head.parameters()))
    x = rng.standard_normal((40, 6, 3))
    lengths = rng.integers(1, 7, size=40)
    y = rng.integers(0, 4, size=40)
    model.fit(x, y, lengths=lengths, loss="cce", optimizer=ours, epochs=1, batch_size=4,
              shuffle=False, verbose=0)
    for step in range(10):
        rows = slice(4 * step, 4 * step + 4)
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.tensor(x[rows]), torch.tensor(lengths[rows]), batch_first=True,
            enforce_sorted=False)
        _, (h, _) = lstm(packed)
        loss = torch.nn.functional.cross_entropy(head(h[-1]), torch.tensor(y[rows]))
        theirs.zero_grad()
        loss.backward()
        theirs.step()
    got = model.parameters()
    for name, value in lstm.state_dict().items():
        np.testing.assert_allclose(got[f"0.{name}"], value.numpy(), rtol=1e-8, atol=1e-12)
    for name, value in head.state_dict().items():
        np.testing.assert_allclose(got[f"1.{name}"], value.numpy(), rtol=1e-8, atol=1e-12)


def _char_model(seed=0):
    return fastrnn.Sequential([
        fastrnn.Embedding(5, 3, dtype="float64", seed=seed),
        fastrnn.GRU(3, 4, dtype="float64", seed=seed),
        fastrnn.Dense(4, 5, dtype="float64", seed=seed),
    ])


def test_truncated_bptt_equals_windows_worked_by_hand(rng):
    """fit(truncate=k) == for each window: forward from the carried state, backward, SGD step."""
    x = rng.integers(0, 5, size=(3, 10))
    y = rng.integers(0, 5, size=(3, 10))
    lengths = np.array([10, 4, 7])
    model = _char_model()
    model.fit(x, y, lengths=lengths, loss="cce", optimizer=SGD(lr=0.3), epochs=1,
              batch_size=3, shuffle=False, verbose=0, truncate=4)

    emb, gru, dense = (layer for layer in _char_model().layers)
    loss = fastrnn.losses.CategoricalCrossentropy()
    state, rows = None, np.arange(3)
    for start in (0, 4, 8):                       # windows [0, 4), [4, 8), [8, 10)
        width = min(4, 10 - start)
        lw = np.clip(lengths - start, 0, width)
        now = rows[lw[rows] > 0]                  # sequences that still have steps
        if state is not None:
            state = state[:, np.searchsorted(rows, now)]
        e = emb(x[now, start:start + width], training=True)
        h, state = gru(e, state=state, lengths=lw[now], training=True)
        logits, _ = dense.model_forward(h, training=True, logits=True)
        mask = np.arange(width) < lw[now][:, None]
        _, grad = loss(logits, y[now, start:start + width], mask)
        dh = dense.backward(grad, through_activation=False)
        de, _ = gru.backward(dh)
        emb.backward(de)
        for layer in (emb, gru, dense):
            for name, p in layer.parameters().items():
                p -= 0.3 * layer.grads[name]
        rows = now
    for i, layer in enumerate((emb, gru, dense)):
        for name, p in layer.parameters().items():
            np.testing.assert_allclose(model.parameters()[f"{i}.{name}"], p, rtol=1e-12,
                                       atol=1e-14)


def test_truncated_bptt_memory_is_bounded_by_the_window(rng):
    x = rng.integers(0, 5, size=(2, 300))
    y = rng.integers(0, 5, size=(2, 300))
    model = _char_model()
    model.fit(x, y, loss="cce", optimizer=SGD(lr=0.1), epochs=1, verbose=0, truncate=25)
    x_window = model.layers[1]._cache[0]          # the input BPTT kept: one window's worth
    assert x_window.shape[1] == 25
    with pytest.raises(ValueError, match="truncate needs a target for every timestep"):
        model.fit(x, y[:, 0], epochs=1, verbose=0, truncate=25)
    with pytest.raises(ValueError, match="truncate needs unidirectional"):
        fastrnn.Sequential([fastrnn.LSTM(3, 2, bidirectional=True)]).fit(
            rng.standard_normal((2, 6, 3)), np.zeros((2, 6, 4)), loss="mse", optimizer="sgd",
            truncate=2)


def test_model_state_dict_round_trip_names_and_refusals(rng):
    """Sequential.state_dict / load_state_dict: PyTorch nn.Sequential's names, copies out,
    all-or-nothing in (issue 16)."""
    make = lambda seed: fastrnn.Sequential([fastrnn.Embedding(10, 4, seed=seed),   # noqa: E731
                                            fastrnn.GRU(4, 5, return_sequences=False,
                                                        seed=seed + 1),
                                            fastrnn.Dense(5, 2, seed=seed + 2)])
    a, b = make(0), make(10)
    sd = a.state_dict()
    assert sorted(sd) == ["0.weight", "1.bias_hh_l0", "1.bias_ih_l0", "1.weight_hh_l0",
                          "1.weight_ih_l0", "2.bias", "2.weight"]
    sd["2.bias"][:] = 7.0                                  # a copy: the model is unchanged
    assert not (a.parameters()["2.bias"] == 7.0).any()
    tokens = rng.integers(0, 10, (3, 6))
    step_before = b.layers[1].step(np.zeros((1, 4), np.float32))[0]   # builds b's stepper
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.predict(tokens), a.predict(tokens))
    np.testing.assert_array_equal(b.layers[1].step(np.zeros((1, 4), np.float32))[0],
                                  a.layers[1].step(np.zeros((1, 4), np.float32))[0])
    assert not np.array_equal(step_before, a.layers[1].step(np.zeros((1, 4), np.float32))[0])
    before = b.state_dict()
    bad = a.state_dict()
    bad["1.weight_hh_l0"] = bad["1.weight_hh_l0"][:, :-1]
    with pytest.raises(ValueError, match=r"state_dict\['1.weight_hh_l0'\] must have shape"):
        b.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"missing \['2.bias'\], unexpected \['2.b'\]"):
        b.load_state_dict({**{k: v for k, v in a.state_dict().items() if k != "2.bias"},
                           "2.b": np.zeros(2)})
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        b.load_state_dict([1, 2])
    for name, p in b.state_dict().items():           # nothing was written by the refusals
        np.testing.assert_array_equal(p, before[name])
