"""fastrnn.keras.load_weights: a fastrnn Sequential with a Keras 3 model's weights gives Keras's
``predict`` (float32 tolerance) over random configurations; the options fastrnn does not compute
are refused with errors that name them. Skipped without Keras 3."""
import os

import numpy as np
import pytest

import fastrnn

# Keras's numpy backend runs every layer here for inference without compiling anything (it
# imports jax for its FFTs, so jax[cpu] must be installed too); KERAS_BACKEND wins if set
os.environ.setdefault("KERAS_BACKEND", "numpy")
keras = pytest.importorskip("keras")
if not keras.version().startswith("3"):                         # pragma: no cover
    pytest.skip("fastrnn.keras reads Keras 3 models", allow_module_level=True)
from fastrnn.keras import load_weights  # noqa: E402

pytestmark = pytest.mark.filterwarnings(    # Keras's numpy backend on NumPy 2
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
L = keras.layers
#: Keras layer and fastrnn layer of each cell
CELLS = {"simple_tanh": (lambda units, **kw: L.SimpleRNN(units, **kw),
                         lambda i, h, **kw: fastrnn.RNN(i, h, **kw)),
         "simple_relu": (lambda units, **kw: L.SimpleRNN(units, activation="relu", **kw),
                         lambda i, h, **kw: fastrnn.RNN(i, h, nonlinearity="relu", **kw)),
         "lstm": (lambda units, **kw: L.LSTM(units, **kw),
                  lambda i, h, **kw: fastrnn.LSTM(i, h, **kw)),
         "gru": (lambda units, **kw: L.GRU(units, **kw),
                 lambda i, h, **kw: fastrnn.GRU(i, h, **kw)),
         "gru_reset_before": (lambda units, **kw: L.GRU(units, reset_after=False, **kw),
                              lambda i, h, **kw: fastrnn.GRU(i, h, reset_after=False, **kw))}


def randomize(model, rng, scale=0.5):
    """Random values in every Keras weight (biases too: Keras starts them at zero)."""
    for variable in model.weights:
        variable.assign(rng.uniform(-scale, scale, variable.shape).astype("float32"))
    return model


def keras_predict(model, x):
    return np.asarray(model.predict(x, verbose=0))


def configurations():
    rng = np.random.default_rng(16)
    out = []
    for i in range(30):
        out.append(dict(cell=list(CELLS)[i % len(CELLS)], bidirectional=bool(rng.integers(2)),
                        stack=int(rng.integers(1, 3)), sequences=bool(rng.integers(2)),
                        bias=bool(rng.integers(4)), embedding=bool(rng.integers(2)),
                        activation=[None, "softmax", "sigmoid", "tanh", "relu"][i % 5],
                        seed=i))
    return out


@pytest.mark.parametrize("config", configurations(),
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_random_models_give_keras_predict(config, rng):
    c = config
    rng = np.random.default_rng(c["seed"])
    B, T, F, H, V, E, O = 4, 7, 3, 5, 11, 4, 3
    keras_cell, fast_cell = CELLS[c["cell"]]
    keras_layers = [keras.Input((T,) if c["embedding"] else (T, F))]
    fast_layers = []
    if c["embedding"]:
        keras_layers.append(L.Embedding(V, E))
        fast_layers.append(fastrnn.Embedding(V, E))
    keras_layers.append(L.Dropout(0.3))
    for k in range(c["stack"]):
        layer = keras_cell(H, use_bias=c["bias"],
                           return_sequences=c["sequences"] or k < c["stack"] - 1)
        keras_layers.append(L.Bidirectional(layer) if c["bidirectional"] else layer)
    fast_layers.append(fast_cell(E if c["embedding"] else F, H, num_layers=c["stack"],
                                 bias=c["bias"], bidirectional=c["bidirectional"],
                                 return_sequences=c["sequences"]))
    keras_layers.append(L.Dense(O, activation=c["activation"]))
    fast_layers += [fastrnn.Dropout(0.2),
                    fastrnn.Dense(H * (2 if c["bidirectional"] else 1), O,
                                  activation=c["activation"])]
    kmodel = randomize(keras.Sequential(keras_layers), rng)
    model = fastrnn.Sequential(fast_layers)
    assert load_weights(model, kmodel) is model
    x = rng.integers(0, V, (B, T)) if c["embedding"] else \
        rng.standard_normal((B, T, F)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), keras_predict(kmodel, x), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("padding", ["post", "pre"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_tanh"])
def test_masked_tokens_give_keras_predict(rng, cell, padding):
    """Embedding(mask_zero=True): fastrnn runs the sequences on their lengths, Keras masks the
    steps; the same outputs at the valid steps and at the end."""
    keras_cell, fast_cell = CELLS[cell]
    tokens = [rng.integers(1, 9, n) for n in (6, 2, 4, 1, 5)]
    x, lengths = fastrnn.text.pad_sequences(tokens, padding=padding)
    kmodel = randomize(keras.Sequential([
        keras.Input((None,)), L.Embedding(9, 4, mask_zero=True),
        L.Bidirectional(keras_cell(5, return_sequences=True)), keras_cell(3)]), rng)
    kseq = randomize(keras.Sequential([
        keras.Input((None,)), L.Embedding(9, 4, mask_zero=True),
        keras_cell(5, return_sequences=True), L.Dense(2)]), rng)
    model = load_weights(fastrnn.Sequential([
        fastrnn.Embedding(9, 4, mask_zero=True), fast_cell(4, 5, bidirectional=True),
        fast_cell(10, 3, return_sequences=False)]), kmodel)
    tagger = load_weights(fastrnn.Sequential([
        fastrnn.Embedding(9, 4, mask_zero=True), fast_cell(4, 5), fastrnn.Dense(5, 2)]), kseq)
    np.testing.assert_allclose(model.predict(x, padding=padding), keras_predict(kmodel, x),
                               rtol=1e-4, atol=1e-5)
    valid = np.arange(x.shape[1]) < lengths[:, None]
    if padding == "pre":
        valid = valid[:, ::-1]
    np.testing.assert_allclose(tagger.predict(x, padding=padding)[valid],
                               keras_predict(kseq, x)[valid], rtol=1e-4, atol=1e-5)


def test_a_keras_file_and_float64(tmp_path, rng):
    kmodel = randomize(keras.Sequential([keras.Input((None, 2)), L.GRU(4, return_sequences=True),
                                         L.LSTM(3), L.Dense(1, activation="sigmoid")]), rng)
    kmodel.save(tmp_path / "m.keras")
    x = rng.standard_normal((3, 6, 2)).astype(np.float32)
    model = fastrnn.Sequential([fastrnn.GRU(2, 4, dtype="float64"),
                                fastrnn.LSTM(4, 3, return_sequences=False, dtype="float64"),
                                fastrnn.Dense(3, 1, activation="sigmoid", dtype="float64")])
    load_weights(model, str(tmp_path / "m.keras"))
    np.testing.assert_allclose(model.predict(x), keras_predict(kmodel, x), rtol=1e-5,
                               atol=1e-6)


def test_functional_model_pooling_and_learned_initial_state(rng):
    inp = keras.Input((None, 3))
    h = L.LSTM(4, return_sequences=True)(inp)
    out = L.Dense(2, activation="softmax")(L.GlobalAveragePooling1D()(h))
    kmodel = randomize(keras.Model(inp, out), rng)
    model = fastrnn.Sequential([fastrnn.LSTM(3, 4, learn_initial_state=True),
                                fastrnn.GlobalAveragePooling1D(),
                                fastrnn.Dense(4, 2, activation="softmax")])
    model.layers[0].parameters()["h0"][:] = 1.0
    load_weights(model, kmodel)
    assert not model.layers[0].parameters()["h0"].any()      # Keras starts from zeros
    x = rng.standard_normal((3, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), keras_predict(kmodel, x), rtol=1e-4, atol=1e-5)


def test_stateful_streams_give_keras_predict(rng):
    kmodel = randomize(keras.Sequential([keras.Input(batch_shape=(2, 4, 3)),
                                         L.LSTM(5, stateful=True, return_sequences=True),
                                         L.Dense(1)]), rng)
    model = load_weights(fastrnn.Sequential([fastrnn.LSTM(3, 5), fastrnn.Dense(5, 1)],
                                            stateful=True), kmodel)
    stream = rng.standard_normal((2, 12, 3)).astype(np.float32)
    for t in range(0, 12, 4):
        np.testing.assert_allclose(model.predict(stream[:, t:t + 4], batch_size=2),
                                   keras_predict(kmodel, stream[:, t:t + 4]), rtol=1e-4,
                                   atol=1e-5)


def _refusal(keras_layers, fast_layers, match, stateful=False, error=ValueError):
    kmodel = keras.Sequential(keras_layers)
    model = fastrnn.Sequential(fast_layers, stateful=stateful)
    before = model.state_dict()
    with pytest.raises(error, match=match):
        load_weights(model, kmodel)
    for name, value in model.state_dict().items():         # all or nothing
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("keras_layer, fast_layer, match", [
    (lambda: L.GRU(4, reset_after=False), lambda: fastrnn.GRU(3, 4),
     r"reset_after=False differs from reset_after=True .*Cho et al\. 2014"),
    (lambda: L.GRU(4), lambda: fastrnn.GRU(3, 4, reset_after=False),
     r"reset_after=True differs from reset_after=False"),
    (lambda: L.LSTM(4, activation="relu"), lambda: fastrnn.LSTM(3, 4),
     r"activation='relu' is not supported"),
    (lambda: L.GRU(4, recurrent_activation="hard_sigmoid"), lambda: fastrnn.GRU(3, 4),
     r"recurrent_activation='hard_sigmoid' is not supported"),
    (lambda: L.SimpleRNN(4, activation="relu"), lambda: fastrnn.RNN(3, 4),
     r"activation='relu' .*nonlinearity='tanh'"),
    (lambda: L.SimpleRNN(4), lambda: fastrnn.RNN(3, 4, nonlinearity="leaky_relu"),
     r"leaky relu"),
    (lambda: L.LSTM(4, go_backwards=True), lambda: fastrnn.LSTM(3, 4),
     r"go_backwards=True is only supported inside a Bidirectional"),
    (lambda: L.Bidirectional(L.LSTM(4), merge_mode="sum"),
     lambda: fastrnn.LSTM(3, 4, bidirectional=True), r"merge_mode='sum'"),
    (lambda: L.Bidirectional(L.LSTM(4)), lambda: fastrnn.LSTM(3, 4),
     r"needs bidirectional=True"),
    (lambda: L.LSTM(4), lambda: fastrnn.LSTM(3, 4, bidirectional=True),
     r"expected a Bidirectional"),
    (lambda: L.LSTM(4), lambda: fastrnn.GRU(3, 4), r"expected a Keras GRU .*got a LSTM"),
    (lambda: L.LSTM(4, return_sequences=True), lambda: fastrnn.LSTM(3, 4,
                                                                     return_sequences=False),
     r"return_sequences=True differs"),
    (lambda: L.LSTM(5), lambda: fastrnn.LSTM(3, 4), r"units=5 differs from hidden_size=4"),
    (lambda: L.LSTM(4, use_bias=False), lambda: fastrnn.LSTM(3, 4), r"use_bias=False"),
    (lambda: L.LSTM(4), lambda: fastrnn.LSTM(3, 4, proj_size=2),
     r"Keras's LSTM has no projection.*proj_size=2"),
])
def test_refusals_name_the_option(keras_layer, fast_layer, match):
    _refusal([keras.Input((5, 3)), keras_layer()], [fast_layer()], match)


def test_other_refusals(tmp_path):
    _refusal([keras.Input((5, 3)), L.Masking(), L.LSTM(4)], [fastrnn.LSTM(3, 4)],
             r"Masking layers are not supported.*lengths")
    _refusal([keras.Input((5, 3)), L.LSTM(4, return_sequences=True)],
             [fastrnn.LSTM(3, 4)], r"stateful=False differs .*stateful=True", stateful=True)
    _refusal([keras.Input((5, 3)), L.LSTM(4, return_sequences=True), L.Dense(2)],
             [fastrnn.LSTM(3, 4)], r"layers left over .*'dense_?\d*' \(Dense\)")
    _refusal([keras.Input((5, 3)), L.LSTM(4, return_sequences=True)],
             [fastrnn.LSTM(3, 4), fastrnn.Dense(4, 2)], r"no layer left for model.layers\[1\]")
    _refusal([keras.Input((5, 3)), L.LSTM(4), L.Dense(2, activation="elu")],
             [fastrnn.LSTM(3, 4, return_sequences=False), fastrnn.Dense(4, 2)],
             r"'dense_?\d*'.*activation='elu' is not supported .*activation=None")
    _refusal([keras.Input((5, 3)), L.LSTM(4, return_sequences=True)], [fastrnn.LSTM(2, 4)],
             r"do not fit the fastrnn model: state_dict\['0.weight_ih_l0'\] must have shape")
    _refusal([keras.Input((5,)), L.Embedding(7, 3)], [fastrnn.Embedding(7, 3, mask_zero=True)],
             r"mask_zero=False differs")
    _refusal([keras.Input((5, 3)), L.LSTM(4)],
             [fastrnn.LayerNorm(3), fastrnn.LSTM(3, 4, return_sequences=False)],
             r"model.layers\[0\] is a LayerNorm")
    model = fastrnn.Sequential([fastrnn.LSTM(3, 4)])
    with pytest.raises(ValueError, match=r"weights file.*load_weights\("):
        load_weights(model, tmp_path / "m.weights.h5")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_weights(model, tmp_path / "absent.keras")
    with pytest.raises(TypeError, match="keras_model must be a Keras model"):
        load_weights(model, {"weights": 1})
    with pytest.raises(TypeError, match="model must be a fastrnn.Sequential"):
        load_weights(fastrnn.LSTM(3, 4), keras.Sequential([keras.Input((5, 3)), L.LSTM(4)]))
