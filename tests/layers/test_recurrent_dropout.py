"""Dropout inside the recurrent layers: between stacked layers (``dropout=``, PyTorch's) and on
the recurrent input (``recurrent_dropout=``, Keras'; Gal and Ghahramani, 2016)."""
import numpy as np
import pytest

import fastrnn
from conftest import VARIANTS as CELLS, make_layer  # (CELLS: and the projected LSTM)
from fastrnn import engine

needs_engine = pytest.mark.skipif(not engine.AVAILABLE, reason="compiled engine not built")


def _pair(cell, dtype, **kw):
    """The same layer on the compiled engine and on the reference (same weights, same masks)."""
    args = dict(num_layers=2, seed=3, dtype=dtype, dropout=0.4, recurrent_dropout=0.3, **kw)
    return (make_layer(cell, 3, 6, backend="compiled", **args),
            make_layer(cell, 3, 6, backend="reference", **args))


@needs_engine
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_compiled_training_call_matches_the_reference_with_the_same_masks(cell, bidirectional,
                                                                          dtype):
    """Both backends draw the same masks from the same seed: outputs, states and every
    gradient agree, with lengths (one of them 0: the empty-row path) and without."""
    rng = np.random.default_rng(1)
    compiled, ref = _pair(cell, dtype, bidirectional=bidirectional)
    x = rng.standard_normal((5, 7, 3))
    tol = 1e-10 if dtype == "float64" else 2e-4
    for lengths in (None, np.array([7, 0, 3, 5, 1])):
        outs = [layer(x, lengths=lengths, training=True) for layer in (compiled, ref)]
        np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=tol, atol=tol)
        dy = rng.standard_normal(outs[0][0].shape)
        grads = [layer.backward(dy) for layer in (compiled, ref)]
        np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=tol, atol=tol)
        for name in ref.grads:
            np.testing.assert_allclose(compiled.grads[name], ref.grads[name], rtol=tol,
                                       atol=tol, err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_acts_in_training_only(cell):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    plain = make_layer(cell, 3, 6, num_layers=2, seed=3)
    dropped = make_layer(cell, 3, 6, num_layers=2, seed=3, dropout=0.5, recurrent_dropout=0.5)
    np.testing.assert_array_equal(plain(x)[0], dropped(x)[0])          # inference: identity
    train = dropped(x, training=True)[0]
    dropped.backward(np.ones_like(train))
    assert not np.allclose(train, plain(x)[0])
    again = dropped(x, training=True)[0]
    dropped.backward(np.ones_like(again))
    assert not np.array_equal(train, again)                            # fresh masks per call


@needs_engine
def test_masks_are_inverted_dropout_of_the_asked_rate():
    """The masks a training call hands the engine: zeros and 1 / (1 - p), about p of them
    zero, the recurrent ones one per (layer, direction, sequence, unit)."""
    layer = fastrnn.GRU(3, 50, num_layers=3, bidirectional=True, seed=0, dropout=0.2,
                        recurrent_dropout=0.4)
    masks = layer._dropout_masks(200, 9)
    lm, rm = masks["layer_masks"], masks["recurrent_masks"]
    assert len(lm) == 2 and lm[0].shape == (200, 9, 100) and rm.shape == (6, 200, 50)
    for m, p in ((np.stack(lm), 0.2), (rm, 0.4)):
        assert m.dtype == np.float32
        assert set(np.unique(m)) == {0.0, np.float32(1 / (1 - p))}
        assert abs((m == 0).mean() - p) < 0.01


def test_rates_are_validated_and_a_useless_rate_warns():
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises((TypeError, ValueError), match="dropout"):
            fastrnn.LSTM(3, 4, num_layers=2, dropout=bad)
        with pytest.raises((TypeError, ValueError), match="recurrent_dropout"):
            fastrnn.LSTM(3, 4, recurrent_dropout=bad)
    with pytest.warns(UserWarning, match="between stacked layers"):
        fastrnn.GRU(3, 4, dropout=0.3)
    layer = fastrnn.RNN(3, 4, num_layers=2, dropout=0.25, recurrent_dropout=0.5)
    assert layer.get_config()["dropout"] == 0.25
    assert layer.get_config()["recurrent_dropout"] == 0.5


def test_training_resumes_bit_for_bit_with_the_masks_it_would_have_drawn(tmp_path):
    """The masks' generator is saved with the model: fit, save, load and fit again ends
    where fitting on ends."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((24, 8, 3)).astype(np.float32)
    y = rng.integers(0, 2, 24)

    def model():
        return fastrnn.Sequential([
            fastrnn.LSTM(3, 8, num_layers=2, seed=1, dropout=0.3, recurrent_dropout=0.3,
                         return_sequences=False),
            fastrnn.Dense(8, 2, activation="softmax", seed=2)])

    a = model()
    a.fit(x, y, loss="cce", optimizer="adam", epochs=1, batch_size=8, verbose=0)
    a.save(tmp_path / "m.npz")
    b = fastrnn.load_model(tmp_path / "m.npz")
    assert b.layers[0].rng_state == a.layers[0].rng_state
    for m in (a, b):
        m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for name, p in a.parameters().items():
        np.testing.assert_array_equal(p, b.parameters()[name], err_msg=name)


def test_recurrent_dropout_regularises_a_model_that_trains():
    """A model with both dropouts still learns a task (loss falls well below chance)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((128, 10, 2)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    model = fastrnn.Sequential([
        fastrnn.GRU(2, 16, num_layers=2, seed=1, dropout=0.1, recurrent_dropout=0.1,
                    return_sequences=False),
        fastrnn.Dense(16, 2, activation="softmax", seed=2)])
    history = model.fit(x, y, loss="cce", optimizer="adam", epochs=30, batch_size=32,
                        verbose=0)
    assert history["loss"][-1] < 0.4 < np.log(2)
