"""Regressions of the reliability issue: each test failed before its fix (a crash, a user's
data lost, or a silently wrong number)."""
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn.callbacks import ModelCheckpoint
from fastrnn.optim import SGD


def per_step_model(seed=0):
    """A tagger: GRU over every step, then a Dense with a bias (so Dense(0) != 0)."""
    return fastrnn.Sequential([fastrnn.GRU(3, 5, return_sequences=True, seed=seed),
                               fastrnn.Dense(5, 2, seed=seed + 1)])


def test_predict_is_zero_at_every_padded_step_whatever_the_batch_size(rng):
    """Padded steps before the batch's longest sequence gave Dense(0) (its bias), those after
    it 0: the padded outputs depended on batch_size, and the documentation says 0."""
    model = per_step_model()
    x = rng.standard_normal((5, 7, 3)).astype(np.float32)
    lengths = np.array([2, 7, 4, 1, 5])
    valid = np.arange(7) < lengths[:, None]
    outs = [model.predict(x, lengths=lengths, batch_size=b) for b in (1, 2, 5)]
    for out in outs:
        assert (out[~valid] == 0).all()
        np.testing.assert_allclose(out, outs[0], rtol=1e-6, atol=1e-7)
    assert (outs[0][valid] != 0).any()


def test_fit_per_step_targets_when_a_batch_shares_a_length_shorter_than_T(rng):
    """_trim dropped the lengths of such a batch (all equal), but not y's padded columns:
    "y_true must be class ids of shape ..." mid-way through training."""
    model = per_step_model()
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=(4, 6))
    lengths = np.array([3, 3, 6, 6])     # batches of 2 without shuffling: (3, 3) and (6, 6)
    history = model.fit(x, y, lengths=lengths, loss="cce", optimizer=SGD(lr=0.1), epochs=2,
                        batch_size=2, shuffle=False, verbose=0)
    assert np.isfinite(history["loss"]).all()
    # and the short batch trained on its valid steps only: the same as training on them alone
    alone = per_step_model()
    alone.fit(x[:2, :3], y[:2, :3], loss="cce", optimizer=SGD(lr=0.1), epochs=1, batch_size=2,
              shuffle=False, verbose=0)
    again = per_step_model()
    again.fit(x[:2], y[:2], lengths=lengths[:2], loss="cce", optimizer=SGD(lr=0.1), epochs=1,
              batch_size=2, shuffle=False, verbose=0)
    for name, p in alone.parameters().items():
        np.testing.assert_allclose(again.parameters()[name], p, rtol=1e-5, atol=1e-6)


def diverging_fit(model, tmp_path=None, **kw):
    """Training at a learning rate at which the loss overflows within a few steps."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 5, 3)).astype(np.float32)
    y = (rng.standard_normal((32, 5, 2)) * 1e3).astype(np.float32)
    callbacks = [] if tmp_path is None else [ModelCheckpoint(tmp_path / "ckpt.npz")]
    return model.fit(x, y, loss="mse", optimizer=SGD(lr=1e6), epochs=4, batch_size=8,
                     verbose=0, callbacks=callbacks, **kw)


def test_a_nonfinite_loss_stops_fit_before_it_reaches_the_weights(tmp_path):
    """fit ran every epoch on NaN, and ModelCheckpoint overwrote the last good checkpoint."""
    model = per_step_model()
    before = {k: p.copy() for k, p in model.parameters().items()}
    with pytest.raises(FloatingPointError, match=r"epoch \d+, step \d+.*on_nonfinite"):
        diverging_fit(model)
    params = model.parameters()
    assert all(np.isfinite(p).all() for p in params.values())
    assert any(not np.array_equal(params[k], before[k]) for k in before)   # it did train


def test_skip_leaves_out_the_nonfinite_updates_and_warns(tmp_path):
    model = per_step_model()
    with pytest.warns(RuntimeWarning, match="skipped"):
        try:
            history = diverging_fit(model, on_nonfinite="skip")
        except FloatingPointError as exc:      # every update of an epoch was non-finite
            assert "nothing was trained" in str(exc)
        else:
            assert np.isfinite(history["loss"]).all()
    assert all(np.isfinite(p).all() for p in model.parameters().values())
    with pytest.raises(ValueError, match="on_nonfinite"):
        diverging_fit(per_step_model(), on_nonfinite="ignore")


def test_a_checkpoint_is_never_written_from_nonfinite_weights(tmp_path, rng):
    model = per_step_model()
    path = tmp_path / "ckpt.npz"
    good = ModelCheckpoint(path)
    good.on_epoch_end(model, 0, {"loss": 1.0})
    kept = path.read_bytes()
    next(iter(model.parameters().values()))[0] = np.nan
    with pytest.warns(RuntimeWarning, match="not written"):
        good.on_epoch_end(model, 1, {"loss": 1.0})
    assert path.read_bytes() == kept
    best = ModelCheckpoint(tmp_path / "best.npz", monitor="loss", save_best_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        best.on_epoch_end(model, 0, {"loss": float("nan")})   # a NaN is never "best"
    assert not (tmp_path / "best.npz").exists() and best.best == np.inf


@pytest.mark.parametrize("dtype", ["flaot32", "bfloat16", "", None, "int32", "float16"])
def test_a_dtype_that_is_not_float32_or_float64_is_refused(dtype):
    """``np.dtype(...) == None`` is True, so a misspelt dtype left a layer with dtype None."""
    for make in (lambda: fastrnn.LSTM(3, 4, dtype=dtype), lambda: fastrnn.Dense(3, 4, dtype=dtype),
                 lambda: fastrnn.Embedding(5, 4, dtype=dtype)):
        with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
            make()


def test_fit_refuses_a_shuffle_that_is_not_a_bool(rng):
    """``fit(shuffle="no")`` shuffled."""
    model = per_step_model()
    x = rng.standard_normal((4, 3, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        model.fit(x, rng.integers(0, 2, (4, 3)), loss="cce", optimizer="sgd", shuffle="no",
                  verbose=0)


@pytest.mark.parametrize("stored", [np.complex64, np.float64, np.int32])
def test_weights_of_another_dtype_in_a_file_are_refused(tmp_path, stored):
    """Complex weights in a file loaded with the imaginary part dropped."""
    import fastrnn.io as fio

    model = per_step_model()
    path = tmp_path / "m.npz"
    model.save(path)
    arrays, meta = fio.load_bundle(path)
    key = next(k for k in arrays if k.startswith("param."))
    arrays[key] = (arrays[key] + (1j if stored is np.complex64 else 0)).astype(stored)
    fio.save_bundle(path, arrays, meta)
    with pytest.raises(ValueError, match=f"{key[len('param.'):]}.*{np.dtype(stored)}.*float32"):
        fastrnn.load_model(path)


def crafted_model_file(tmp_path, edit, rng):
    """A saved model whose layer configuration ``edit(layers)`` changed (a valid checksum:
    the file is what a hostile or careless writer would make)."""
    import fastrnn.io as fio

    model = fastrnn.Sequential([fastrnn.Embedding(20, 4, seed=0), fastrnn.LSTM(4, 6, seed=1),
                                fastrnn.Dense(6, 3, seed=2)])
    path = tmp_path / "m.npz"
    model.save(path)
    arrays, meta = fio.load_bundle(path)
    edit(meta["layers"])
    fio.save_bundle(path, arrays, meta)
    return path


@pytest.mark.parametrize("edit", [
    lambda layers: layers[1]["config"].update(hidden_size=20000),     # 8.9 GiB asked
    lambda layers: layers[1]["config"].update(num_layers=10**6),      # 745 MB of shapes
    lambda layers: layers[0]["config"].update(num_embeddings=10**9),  # an embedding bomb
], ids=["hidden_size", "num_layers", "num_embeddings"])
def test_a_configuration_that_asks_more_than_the_file_holds_is_refused_before_allocating(
        tmp_path, rng, edit):
    """load_model built the layers from the JSON before checking the arrays: MemoryError."""
    import tracemalloc

    path = crafted_model_file(tmp_path, edit, rng)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="m.npz.*more parameters than the file holds"):
            fastrnn.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_a_deflate_bomb_and_a_file_over_max_bytes_are_refused_before_reading(tmp_path):
    import fastrnn.io as fio

    path = tmp_path / "bomb.npz"
    fio.save_bundle(path, {"x": np.zeros(2**24, np.float32)}, {}, compress=True)  # 64 MiB
    assert path.stat().st_size < 2**20
    with pytest.raises(ValueError, match="bomb.npz.*inflates.*max_inflation=100"):
        fio.load_bundle(path)
    with pytest.raises(ValueError, match="bomb.npz.*max_inflation=100"):
        fastrnn.load_model(path)
    assert fio.load_bundle(path, max_inflation=5000)[0]["x"].shape == (2**24,)
    with pytest.raises(ValueError, match="bomb.npz.*more than max_bytes=1000000"):
        fio.load_bundle(path, max_bytes=10**6, max_inflation=5000)
    for bad in (0, -1, 1.5, True):
        with pytest.raises((TypeError, ValueError), match="max_bytes"):
            fio.load_bundle(path, max_bytes=bad)


def test_a_npy_header_cut_short_is_a_value_error_naming_the_file(tmp_path):
    """A broken .npy header in a file with a valid checksum raised tokenize.TokenError."""
    import zipfile

    import fastrnn.io as fio

    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,".ljust(117) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(12)
    path = tmp_path / "cut.npz"
    with open(path, "w+b") as f:          # what save_bundle writes, with that member
        with zipfile.ZipFile(f, "w") as zf:
            zf.comment = fio._CHECKSUM_PREFIX + b"0" * 64
            zf.writestr("metadata.json", b'{"format": "fastrnn", "format_version": 1}')
            zf.writestr("x.npy", member)
        fio._write_checksum(f)
    with pytest.raises(ValueError, match="cut.npz.*cannot parse array member 'x.npy'"):
        fio.load_bundle(path)


@pytest.mark.parametrize("make, message", [
    (lambda: fastrnn.Embedding(10, 4, padding_idx=True), "padding_idx must be an integer"),
    (lambda: fastrnn.Embedding(10, 4, padding_idx=1.5), "padding_idx must be an integer"),
    (lambda: fastrnn.Embedding(10, 4, padding_idx="0"), "padding_idx must be an integer"),
    (lambda: fastrnn.Dropout(p=True), "p must be a real number"),
    (lambda: fastrnn.Dropout(p="0.5"), "p must be a real number"),
])
def test_a_bool_or_a_string_is_not_an_index_or_a_rate(make, message):
    """``Embedding(10, 4, padding_idx=True)`` zeroed every row (``weight[True] = 0``)."""
    with pytest.raises(TypeError, match=message):
        make()


def test_a_numpy_integer_padding_idx_is_kept_as_a_python_int(tmp_path):
    layer = fastrnn.Embedding(10, 4, padding_idx=np.int64(3), seed=0)
    assert type(layer.padding_idx) is int and (layer.parameters()["weight"][3] == 0).all()
    assert (layer.parameters()["weight"][[0, 1, 2, 4]] != 0).all()
    model = fastrnn.Sequential([layer])
    model.save(tmp_path / "e.npz")                # the config is JSON
    assert fastrnn.load_model(tmp_path / "e.npz").layers[0].padding_idx == 3


@pytest.mark.parametrize("activation", [None, "tanh"])
def test_dense_backward_refuses_a_dy_it_would_broadcast(rng, activation):
    """``Dense.backward`` broadcast a dy of shape (1, out) over the batch."""
    layer = fastrnn.Dense(3, 2, activation=activation, seed=0)
    layer(rng.standard_normal((4, 3)), training=True)
    with pytest.raises(ValueError, match=r"dy must have shape \(4, 2\)"):
        layer.backward(np.ones((1, 2)))
    assert layer.backward(np.ones((4, 2))).shape == (4, 3)


def test_ragged_lists_and_1d_tokens_get_messages_that_name_the_argument():
    """numpy's own words ("inhomogeneous shape", "not enough values to unpack")."""
    with pytest.raises(TypeError, match="x must be an array of integer token ids"):
        fastrnn.Embedding(10, 4)([[1, 2], [3]])
    with pytest.raises(TypeError, match="x must be an array of real numbers"):
        fastrnn.Dense(3, 2)([[1, 2, 3], [3]])
    model = fastrnn.Sequential([fastrnn.Embedding(10, 4), fastrnn.GRU(4, 3)])
    with pytest.raises(ValueError, match=r"X must be token ids of shape \(batch, timesteps\)"):
        model.predict(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\), got shape \(\)"):
        fastrnn.Dense(3, 2)(1.0)
