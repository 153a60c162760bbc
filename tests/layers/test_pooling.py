"""GlobalAveragePooling1D: the masked mean over time (against NumPy, its gradient against
finite differences in float64, in a Sequential that trains and survives save / load,
validation)."""
import numpy as np
import pytest

import fastrnn
from conftest import numerical_gradient, rel_err

#: (batch, timesteps, features, lengths): batch 1, length 1, padded batches, all full
SHAPES = [(1, 1, 1, None), (2, 3, 4, [3, 1]), (3, 5, 2, [5, 2, 4]), (2, 4, 3, [4, 4])]


def _numpy_mean(x, lengths):
    if lengths is None:
        return x.mean(axis=1)
    return np.stack([x[b, :n].mean(axis=0) for b, n in enumerate(lengths)])


@pytest.mark.parametrize("batch, timesteps, features, lengths", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pooling_is_the_mean_over_the_valid_steps(batch, timesteps, features, lengths, dtype,
                                                  rng):
    pool = fastrnn.GlobalAveragePooling1D(dtype=dtype)
    x = rng.standard_normal((batch, timesteps, features))
    y = pool(x, lengths)
    assert y.dtype == np.dtype(dtype) and y.shape == (batch, features)
    tol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(y, _numpy_mean(x, lengths), rtol=tol, atol=tol)
    if lengths is not None:          # what the padding holds does not matter
        noisy = x.copy()
        for b, n in enumerate(lengths):
            noisy[b, n:] = 1e3
        np.testing.assert_array_equal(pool(noisy, lengths), y)
    assert pool.output_shape((batch, timesteps, features)) == (batch, features)


@pytest.mark.parametrize("batch, timesteps, features, lengths", SHAPES)
def test_pooling_gradient_against_finite_differences(batch, timesteps, features, lengths, rng):
    pool = fastrnn.GlobalAveragePooling1D(dtype="float64")
    x = rng.standard_normal((batch, timesteps, features))
    lengths = None if lengths is None else np.array(lengths)
    r = rng.standard_normal((batch, features))
    pool.model_forward(x, lengths, training=True)
    dx, dstate = pool.model_backward(r)
    assert dstate is None
    numeric = numerical_gradient(lambda: float(np.sum(pool.model_forward(x, lengths)[0] * r)),
                                 x)
    assert rel_err(dx, numeric) < 1e-8
    if lengths is not None:
        assert not dx[np.arange(timesteps) >= lengths[:, None]].any()   # 0 at the padding
    pool(x, lengths, training=True)
    np.testing.assert_array_equal(pool.backward(r), dx)
    assert pool.grads == {} and pool.parameters() == {}
    pool.model_forward(x, lengths, training=True)
    assert pool.model_backward(r, input_grad=False) == (None, None)


def test_pooling_refuses_bad_input_and_cannot_step():
    pool = fastrnn.GlobalAveragePooling1D()
    with pytest.raises(ValueError, match="x"):
        pool(np.ones((2, 3)))
    with pytest.raises(ValueError, match="lengths"):
        pool(np.ones((2, 3, 4)), lengths=[4, 1])
    with pytest.raises(ValueError, match="NaN|Inf"):
        pool(np.full((1, 2, 2), np.nan))
    with pytest.raises(RuntimeError, match="training=True"):
        fastrnn.GlobalAveragePooling1D().backward(np.ones((2, 4)))
    pool(np.ones((2, 3, 4)), training=True)
    with pytest.raises(ValueError, match="dy"):
        pool.backward(np.ones((2, 5)))                # 5 features where the input had 4
    assert pool.backward(np.ones((2, 4))).shape == (2, 3, 4)
    with pytest.raises(TypeError, match="whole sequence"):
        pool.step(np.ones((2, 4)))
    assert fastrnn.GlobalAveragePooling1D(**pool.get_config()).get_config() == pool.get_config()


def test_a_pooled_transformer_classifier_trains_and_survives_save_and_load(tmp_path, rng):
    """Which of two tokens comes first: a classifier over a masked mean learns it."""
    n, timesteps = 256, 8
    lengths = rng.integers(3, timesteps + 1, size=n)
    x = rng.integers(3, 6, size=(n, timesteps))
    y = rng.integers(0, 2, size=n)
    for i, length in enumerate(lengths):
        a, b = sorted(rng.choice(length, size=2, replace=False))
        x[i, a], x[i, b] = (1, 2) if y[i] else (2, 1)
        x[i, length:] = 0
    model = fastrnn.Sequential([
        fastrnn.Embedding(6, 8, padding_idx=0, seed=0),
        fastrnn.PositionalEncoding(timesteps, 8),
        fastrnn.TransformerEncoderLayer(8, 2, 16, seed=0),
        fastrnn.GlobalAveragePooling1D(),
        fastrnn.Dense(8, 2, seed=0),
    ])
    history = model.fit(x, y, lengths=lengths, loss="cce", optimizer=fastrnn.optim.Adam(lr=0.01),
                        epochs=20, batch_size=32, verbose=0, metrics=("accuracy",))
    assert history["accuracy"][-1] > 0.9
    path = tmp_path / "pooled.fastrnn"
    model.save(path)
    loaded = fastrnn.load_model(path)
    assert isinstance(loaded.layers[3], fastrnn.GlobalAveragePooling1D)
    np.testing.assert_array_equal(loaded.predict(x, lengths), model.predict(x, lengths))
