"""Bad input gets a clear error that names the argument, before any engine sees it."""
import numpy as np
import pytest

import fastrnn


@pytest.fixture
def lstm():
    return fastrnn.LSTM(3, 4, seed=0, backend="reference")


@pytest.fixture
def gru():
    return fastrnn.GRU(3, 4, seed=0, backend="reference")


X = np.zeros((2, 5, 3))


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(input_size=0), ValueError, "input_size"),
    (dict(hidden_size=2.5), TypeError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(dtype="int32"), ValueError, "dtype"),
    (dict(dtype="float16"), ValueError, "dtype"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(bias="yes"), TypeError, "bias"),
    (dict(bidirectional=1), TypeError, "bidirectional"),
    (dict(nonlinearity="sigmoid"), ValueError, "nonlinearity"),
])
def test_constructor_arguments(kwargs, error, words):
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(error, match=words):
        fastrnn.RNN(**args)


@pytest.mark.parametrize("x, error, words", [
    (np.zeros((5, 3)), ValueError, r"x must have 3 dimensions .* got shape \(5, 3\)"),
    (np.zeros((2, 5, 4)), ValueError, r"x must have shape \(any, any, 3\), got \(2, 5, 4\)"),
    (np.zeros((0, 5, 3)), ValueError, "x must not be empty"),
    (np.zeros((2, 0, 3)), ValueError, "x must not be empty"),
    (np.zeros((2, 5, 3), dtype=complex), TypeError, "x must be an array of real numbers"),
    (np.full((2, 5, 3), "a"), TypeError, "x must be an array of real numbers"),
    (np.full((2, 5, 3), np.nan), ValueError, "x contains NaN or Inf"),
    ([[[1.0, 2.0, 3.0]], [[1.0, 2.0]]], TypeError, "x must be an array of real numbers"),
])
def test_bad_x(lstm, x, error, words):
    with pytest.raises(error, match=words):
        lstm(x)


def test_inf_anywhere_in_x_is_refused(lstm):
    x = X.copy()
    x[1, 4, 2] = -np.inf
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        lstm(x)


def test_integer_and_float64_input_is_cast(lstm):
    y_int, _ = lstm(np.ones((2, 5, 3), dtype=np.int64))
    y_f64, _ = lstm(np.ones((2, 5, 3)))
    assert y_int.dtype == np.float32
    np.testing.assert_array_equal(y_int, y_f64)


@pytest.mark.parametrize("lengths, error, words", [
    ([6, 0], ValueError, r"lengths must be in 0\.\.5 .* from 0 to 6"),   # 0: empty sequence
    ([6, 2], ValueError, r"lengths must be in 0\.\.5"),
    ([-1, 2], ValueError, r"lengths must be in 0\.\.5"),
    ([5, 2, 3], ValueError, r"lengths must have shape \(2,\)"),
    ([[5, 2]], ValueError, r"lengths must have shape \(2,\)"),
    ([5.0, 2.0], TypeError, "lengths must be integers"),
    (["5", "2"], TypeError, "lengths must be integers"),
])
def test_bad_lengths(lstm, lengths, error, words):
    with pytest.raises(error, match=words):
        lstm(X, lengths=lengths)


def test_bad_states(lstm, gru):
    h = np.zeros((1, 2, 4))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\)"):
        lstm(X, state=h)
    with pytest.raises(ValueError, match=r"state\[1\] \(c\) must have shape \(1, 2, 4\)"):
        lstm(X, state=(h, np.zeros((1, 3, 4))))
    with pytest.raises(ValueError, match=r"state\[0\] \(h\) contains NaN or Inf"):
        lstm(X, state=(np.full((1, 2, 4), np.nan), h))
    with pytest.raises(TypeError, match="state must be an array h"):
        gru(X, state=(h, h))
    with pytest.raises(ValueError, match=r"state must have shape \(1, 2, 4\)"):
        gru(X, state=np.zeros((2, 2, 4)))


def test_backward_before_a_training_forward(lstm):
    with pytest.raises(RuntimeError, match="training=True"):
        lstm.backward(np.zeros((2, 5, 4)))
    lstm(X)                                    # an inference call does not enable backward
    with pytest.raises(RuntimeError, match="training=True"):
        lstm.backward(np.zeros((2, 5, 4)))


def test_bad_upstream_gradients(lstm, gru):
    lstm(X, training=True)
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 5, 4\)"):
        lstm.backward(np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match="dy contains NaN"):
        lstm.backward(np.full((2, 5, 4), np.nan))
    with pytest.raises(TypeError, match=r"dstate must be a tuple \(dh, dc\)"):
        lstm.backward(None, np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"dstate\[1\] must have shape \(1, 2, 4\)"):
        lstm.backward(None, (None, np.zeros((1, 2, 3))))
    with pytest.raises(ValueError, match="needs dy or dstate"):
        lstm.backward(None)
    gru(X, training=True)
    with pytest.raises(ValueError, match=r"dstate must have 3 dimensions \(1, 2, 4\), got shape \(2, 4\)"):
        gru.backward(None, np.zeros((2, 4)))


def test_bad_state_dicts_leave_the_layer_unchanged(gru):
    before = gru.state_dict()
    good = gru.state_dict()
    missing = dict(good)
    del missing["bias_hh_l0"]
    with pytest.raises(ValueError, match=r"state_dict .* missing \['bias_hh_l0'\]"):
        gru.load_state_dict(missing)
    extra = dict(good, weight_ih_l1=np.zeros((12, 4)))
    with pytest.raises(ValueError, match=r"unexpected \['weight_ih_l1'\]"):
        gru.load_state_dict(extra)
    misshapen = {name: np.zeros_like(p) for name, p in good.items()}
    misshapen["weight_hh_l0"] = np.zeros((4, 12))     # transposed
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l0'\] must have shape \(12, 4\)"):
        gru.load_state_dict(misshapen)
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        gru.load_state_dict([("weight_ih_l0", np.zeros((12, 3)))])
    for name, p in gru.parameters().items():        # nothing was half-written
        np.testing.assert_array_equal(p, before[name])


def test_bad_streaming_steps(lstm):
    with pytest.raises(ValueError, match=r"x_t must have 2 dimensions"):
        lstm.step(np.zeros((1, 1, 3)))
    with pytest.raises(ValueError, match=r"x_t must have shape \(any, 3\)"):
        lstm.step(np.zeros((1, 4)))
    bi = fastrnn.GRU(3, 4, bidirectional=True, backend="reference")
    with pytest.raises(ValueError, match="step.*unidirectional"):
        bi.step(np.zeros((1, 3)))


# ------------------------------------------------------------------------------ check_bool

def test_check_bool_accepts_bool_and_numpy_bool_and_returns_a_python_bool():
    from fastrnn._validation import check_bool

    for value in (True, False, np.True_, np.False_, np.bool_(1)):
        got = check_bool("flag", value)
        assert type(got) is bool and got == bool(value)


@pytest.mark.parametrize("value", [0, 1, 1.0, "yes", "", None, np.int64(1), np.array(True),
                                   [True]])
def test_check_bool_refuses_everything_else_with_one_message(value):
    from fastrnn._validation import check_bool

    with pytest.raises(TypeError) as info:
        check_bool("flag", value)
    assert str(info.value) == f"flag must be True or False, got {value!r}"


@pytest.mark.parametrize("make, name", [
    (lambda v: fastrnn.RNN(3, 4, return_sequences=v), "return_sequences"),
    (lambda v: fastrnn.LSTM(3, 4, bias=v), "bias"),
    (lambda v: fastrnn.GRU(3, 4, bidirectional=v), "bidirectional"),
    (lambda v: fastrnn.layers.Dense(3, 4, bias=v), "bias"),
    (lambda v: fastrnn.losses.BinaryCrossentropy(from_logits=v), "from_logits"),
    (lambda v: fastrnn.optim.SGD(momentum=0.9, nesterov=v), "nesterov"),
    (lambda v: fastrnn.optim.Adam(amsgrad=v), "amsgrad"),
    (lambda v: fastrnn.optim.RMSprop(centered=v), "centered"),
    (lambda v: fastrnn.optim.clip_grad_norm({"w": np.ones(2)}, 1.0, error_if_nonfinite=v),
     "error_if_nonfinite"),
])
def test_every_flag_argument_uses_check_bool(make, name):
    with pytest.raises(TypeError) as info:
        make(1)
    assert str(info.value) == f"{name} must be True or False, got 1"
    make(np.True_)                       # a NumPy bool is accepted


#: every public constructor that takes a dtype, with its other arguments
DTYPED = {
    "RNN": lambda dtype: fastrnn.RNN(3, 4, dtype=dtype),
    "LSTM": lambda dtype: fastrnn.LSTM(3, 4, dtype=dtype),
    "GRU": lambda dtype: fastrnn.GRU(3, 4, dtype=dtype),
    "Dense": lambda dtype: fastrnn.Dense(3, 2, dtype=dtype),
    "Embedding": lambda dtype: fastrnn.Embedding(5, 2, dtype=dtype),
    "LayerNorm": lambda dtype: fastrnn.LayerNorm(4, dtype=dtype),
    "MultiHeadAttention": lambda dtype: fastrnn.MultiHeadAttention(4, 2, dtype=dtype),
    "PositionalEncoding": lambda dtype: fastrnn.PositionalEncoding(8, 4, dtype=dtype),
    "TransformerEncoderLayer": lambda dtype: fastrnn.TransformerEncoderLayer(
        4, 2, dim_feedforward=8, dtype=dtype),
    "GlobalAveragePooling1D": lambda dtype: fastrnn.GlobalAveragePooling1D(dtype=dtype),
    "EncoderDecoder": lambda dtype: fastrnn.EncoderDecoder(6, 6, 4, 4, dtype=dtype),
    "init.orthogonal": lambda dtype: fastrnn.init.orthogonal((3, 3), dtype=dtype),
}


@pytest.mark.parametrize("make", DTYPED.values(), ids=DTYPED.keys())
@pytest.mark.parametrize("dtype", ["bfloat16", "nonsense", int, "int32", "float16", None,
                                   "complex128", ">f8", "longdouble", object, [], 1.5])
def test_only_float32_and_float64_are_accepted_as_dtype(make, dtype):
    """One check (``_validation.check_dtype``) everywhere: a clear ValueError naming dtype."""
    with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'float64', got"):
        make(dtype)


@pytest.mark.parametrize("make", DTYPED.values(), ids=DTYPED.keys())
@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.dtype("float64"), "f8"])
def test_float32_and_float64_are_accepted_in_any_spelling(make, dtype):
    made = make(dtype)
    repr(made)                           # a layer's repr shows its (valid) dtype
    got = made.dtype if hasattr(made, "dtype") else made.get_config()["dtype"]
    assert np.dtype(got) == np.dtype(dtype)
