"""Fuzzing the public entry points: every call either works (and then gives what the reference
gives) or raises a TypeError / ValueError whose message names the argument at fault."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn.text import pad_sequences

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

#: values a careless or hostile caller passes where a size, a flag, a rate or a name belongs
ODD = st.sampled_from([None, True, False, 0, -1, 1.5, float("nan"), float("inf"), "3", "",
                       "float32", [], [2], (), {}, object(), np.int64(3), np.float32(0.5),
                       np.array(2), np.array([1, 2]), 1j, b"x"])

VALID = {
    "RNN": dict(input_size=3, hidden_size=4, num_layers=1, nonlinearity="tanh", bias=True,
                bidirectional=False, dtype="float32", seed=0, backend=None,
                return_sequences=True),
    "LSTM": dict(input_size=3, hidden_size=4, num_layers=1, bias=True, bidirectional=False,
                 dtype="float32", seed=0, backend=None, return_sequences=True),
    "GRU": dict(input_size=3, hidden_size=4, num_layers=2, bias=True, bidirectional=True,
                dtype="float64", seed=0, backend=None, return_sequences=False),
    "Dense": dict(in_features=3, out_features=2, activation=None, bias=True,
                  dtype="float32", seed=0),
    "Embedding": dict(num_embeddings=10, embedding_dim=4, padding_idx=None, dtype="float32",
                      seed=0),
    "Dropout": dict(p=0.5, seed=0),
}


def check_error(exc, name):
    """A TypeError or ValueError that names the argument."""
    assert isinstance(exc, (TypeError, ValueError)), f"{name}: {type(exc).__name__}: {exc}"
    assert name in str(exc), f"the message does not name {name!r}: {exc}"


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data(), ODD)
def test_constructors(cls_name, data, value):
    """A layer built with one argument replaced by an odd value: built, or refused clearly."""
    kwargs = dict(VALID[cls_name])
    name = data.draw(st.sampled_from(sorted(kwargs)), label="argument")
    kwargs[name] = value
    try:
        layer = getattr(fastrnn, cls_name)(**kwargs)
    except Exception as exc:  # noqa: BLE001 - what is raised is the point of the test
        check_error(exc, name)
        return
    assert isinstance(layer.get_config(), dict)   # what was accepted is kept as a usable value
    type(layer)(**layer.get_config())


def arrays(dtype, max_batch=3, max_steps=5, features=3):
    shape = st.tuples(st.integers(1, max_batch), st.integers(1, max_steps), st.just(features))
    return shape.flatmap(lambda s: st.builds(
        lambda seed: np.random.default_rng(seed).standard_normal(s).astype(dtype),
        st.integers(0, 2**16)))


@FUZZ
@given(st.sampled_from(["RNN", "LSTM", "GRU"]), arrays(np.float64), st.booleans(),
       st.booleans(), st.data())
def test_recurrent_calls_equal_the_reference(cls_name, x, bidirectional, with_lengths, data):
    """Any valid batch: the default engine gives what the reference gives."""
    kwargs = dict(VALID[cls_name], dtype="float64", bidirectional=bidirectional, num_layers=2)
    fast = getattr(fastrnn, cls_name)(**kwargs)
    ref = getattr(fastrnn, cls_name)(**dict(kwargs, backend="reference"))
    lengths = None
    if with_lengths:
        lengths = np.array(data.draw(st.lists(st.integers(1, x.shape[1]), min_size=x.shape[0],
                                              max_size=x.shape[0])))
    y, _ = fast(x, lengths=lengths)
    want, _ = ref(x, lengths=lengths)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-12)


@FUZZ
@given(st.sampled_from(["x", "state", "lengths", "training"]), ODD)
def test_recurrent_call_arguments(name, value):
    layer = fastrnn.LSTM(3, 4, seed=0)
    kwargs = dict(x=np.zeros((2, 3, 3), np.float32), state=None, lengths=None, training=False)
    kwargs[name] = value
    try:
        layer(**kwargs)
    except Exception as exc:  # noqa: BLE001
        check_error(exc, name)


@FUZZ
@given(st.sampled_from(["epochs", "batch_size", "validation_split", "shuffle", "verbose",
                        "seed", "initial_epoch", "clip_norm", "clip_value", "truncate",
                        "lengths", "on_nonfinite", "callbacks", "metrics"]), ODD)
def test_fit_arguments(name, value):
    """fit with one odd argument: trains, or is refused clearly before any epoch runs."""
    model = fastrnn.Sequential([fastrnn.GRU(3, 4, seed=0, return_sequences=False),
                                fastrnn.Dense(4, 2, seed=1)])
    x = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1, 0])
    kwargs = dict(loss="cce", optimizer="sgd", epochs=1, batch_size=3, verbose=0)
    kwargs[name] = value
    before = model.epochs_trained
    try:
        model.fit(x, y, **kwargs)
    except Exception as exc:  # noqa: BLE001
        check_error(exc, name)
        assert model.epochs_trained == before
        return


@FUZZ
@given(st.sampled_from(["maxlen", "dtype", "padding", "truncating", "value"]), ODD)
def test_pad_sequences_arguments(name, value):
    kwargs = dict(maxlen=None, dtype="int64", padding="post", truncating="post", value=0)
    kwargs[name] = value
    try:
        out = pad_sequences([[1, 2, 3], [4]], **kwargs)
    except Exception as exc:  # noqa: BLE001
        check_error(exc, name)
        return
    assert isinstance(out, tuple) or isinstance(out, np.ndarray)


@pytest.mark.parametrize("dtype, value", [("uint8", 300), ("int8", -200), ("int16", 10**6)])
def test_pad_sequences_refuses_ids_its_dtype_cannot_hold(dtype, value):
    """``pad_sequences(..., dtype="uint8")`` wrapped 300 to 44."""
    with pytest.raises(ValueError, match=f"dtype.*{dtype}"):
        pad_sequences([[1, value]], dtype=dtype)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1.5, 300])
def test_pad_sequences_refuses_a_fill_value_its_dtype_cannot_hold(value):
    with pytest.raises(ValueError, match="value=.*cannot be represented in dtype uint8"):
        pad_sequences([[1, 2]], dtype="uint8", value=value)
