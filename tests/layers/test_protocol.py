"""The layer protocol (fastrnn.layers.Layer) and the model layer that uses only it."""
import ast
import inspect
import pathlib

import numpy as np
import pytest

import fastrnn
from fastrnn.diagnostics import gradient_norms, hidden_gradient_norms
from fastrnn.layers import Layer, Recurrent
from fastrnn.models import LAYER_CLASSES, train_truncated
from fastrnn.optim import SGD

ROOT = pathlib.Path(fastrnn.__file__).parent


def _instances():
    return [
        fastrnn.Dense(3, 2, dtype="float64", seed=0),
        fastrnn.Embedding(7, 3, padding_idx=0, dtype="float64", seed=0),
        fastrnn.Dropout(0.3, seed=0),
        fastrnn.RNN(3, 4, dtype="float64", seed=0),
        fastrnn.LSTM(3, 4, dtype="float64", seed=0),
        fastrnn.GRU(3, 4, dtype="float64", seed=0),
        fastrnn.MultiHeadAttention(4, 2, dtype="float64", seed=0),
        fastrnn.PositionalEncoding(5, 4, kind="learned", dtype="float64", seed=0),
        fastrnn.LayerNorm(4, dtype="float64"),
        fastrnn.TransformerEncoderLayer(4, 2, 6, dtype="float64", seed=0),
        fastrnn.GlobalAveragePooling1D(dtype="float64"),
    ]


@pytest.mark.parametrize("layer", _instances(), ids=lambda layer: type(layer).__name__)
def test_every_layer_class_satisfies_the_protocol(layer):
    assert isinstance(layer, Layer)
    forward = inspect.signature(layer.model_forward).parameters
    assert list(forward)[:2] == ["x", "lengths"]
    for name in ("state", "training"):
        assert forward[name].kind is inspect.Parameter.KEYWORD_ONLY
    backward = inspect.signature(layer.model_backward).parameters
    assert list(backward)[0] == "dy"
    for name in ("dstate", "input_grad"):
        assert backward[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(layer.step).parameters) == ["x_t", "state"]
    rebuilt = type(layer)(**layer.get_config())
    assert {k: v.shape for k, v in rebuilt.parameters().items()} == \
        {k: v.shape for k, v in layer.parameters().items()}
    for method in ("model_forward", "model_backward", "step", "get_config", "output_shape",
                   "parameters"):
        assert getattr(type(layer), method).__doc__, method


def test_layer_classes_are_the_protocol_implementations():
    assert set(LAYER_CLASSES) == {"Dense", "Dropout", "Embedding", "GRU", "LSTM", "RNN",
                                  "LayerNorm", "MultiHeadAttention", "PositionalEncoding",
                                  "TransformerEncoderLayer", "GlobalAveragePooling1D"}
    assert not isinstance(object(), Layer)
    with pytest.raises(TypeError, match=r"layers\[0\] must be a fastrnn layer"):
        fastrnn.Sequential([object()])


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_model_forward_and_backward_take_and_return_state(rng, cls, bidirectional):
    kw = dict(num_layers=2, bidirectional=bidirectional, dtype="float64", seed=1,
              backend="reference")
    layer, seq = cls(3, 4, return_sequences=False, **kw), cls(3, 4, **kw)
    x = rng.standard_normal((5, 6, 3))
    lengths = np.array([6, 2, 5, 1, 3])
    h0 = rng.standard_normal((2 * (1 + bidirectional), 5, 4))
    state = (h0, rng.standard_normal(h0.shape)) if cls is fastrnn.LSTM else h0

    y_ref, state_ref = seq(x, state=state, lengths=lengths, training=True)
    y_seq, state_seq = seq.model_forward(x, lengths, state=state, training=True)
    np.testing.assert_array_equal(y_seq, y_ref)
    for a, b in zip(np.atleast_1d(state_seq) if cls is not fastrnn.LSTM else state_seq,
                    np.atleast_1d(state_ref) if cls is not fastrnn.LSTM else state_ref):
        np.testing.assert_array_equal(a, b)

    # return_sequences=False: the output is the final state of the last layer's directions
    y_last, state_last = layer.model_forward(x, lengths, state=state, training=True)
    h_n = state_last[0] if cls is fastrnn.LSTM else state_last
    nd = 2 if bidirectional else 1
    np.testing.assert_array_equal(y_last, np.concatenate(list(h_n[-nd:]), axis=1))

    # its backward equals backward() of the full sequence with the matching final-state grad
    dy = rng.standard_normal(y_last.shape)
    dx, dstate0 = layer.model_backward(dy)
    seq(x, state=state, lengths=lengths, training=True)
    dx_ref, dstate0_ref = seq.backward(None, layer.final_state_grad(dy))
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-14)
    for name, g in seq.grads.items():
        np.testing.assert_allclose(layer.grads[name], g, rtol=1e-12, atol=1e-14)
    pairs = zip(dstate0, dstate0_ref) if cls is fastrnn.LSTM else [(dstate0, dstate0_ref)]
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)

    # dstate given as well: the two gradients add
    extra = layer.final_state_grad(rng.standard_normal(y_last.shape))
    layer.model_forward(x, lengths, state=state, training=True)
    dx_both, _ = layer.model_backward(dy, dstate=extra)
    seq.model_forward(x, lengths, state=state, training=True)
    dh = layer.final_state_grad(dy)
    total = (dh[0] + extra[0], None) if cls is fastrnn.LSTM else dh + extra
    dx_sum, _ = seq.model_backward(None, dstate=total)
    np.testing.assert_allclose(dx_both, dx_sum, rtol=1e-12, atol=1e-14)


def test_stateless_layers_pass_no_state(rng):
    dense = fastrnn.Dense(3, 2, activation="tanh", dtype="float64", seed=0)
    x = rng.standard_normal((4, 5, 3))
    expected = dense(x)
    y, state = dense.model_forward(x, None, training=True)
    assert state is None
    np.testing.assert_array_equal(y, expected)
    dy = rng.standard_normal(y.shape)
    dx, dstate0 = dense.model_backward(dy)
    assert dstate0 is None
    dense(x, training=True)
    np.testing.assert_array_equal(dx, dense.backward(dy))
    # logits: the pre-activation out, and a backward that skips the activation
    logits, _ = dense.model_forward(x, training=True, logits=True)
    np.testing.assert_array_equal(logits, dense.linear(x))
    dx, _ = dense.model_backward(dy, input_grad=False)
    assert dx is None
    np.testing.assert_allclose(dense.grads["weight"], dy.reshape(-1, 2).T @ x.reshape(-1, 3))

    emb = fastrnn.Embedding(7, 3, dtype="float64", seed=0)
    tokens = np.array([[1, 2, 2], [6, 0, 1]])
    e, state = emb.model_forward(tokens, training=True)
    assert state is None and e.shape == (2, 3, 3)
    assert emb.model_backward(np.ones_like(e)) == (None, None)
    np.testing.assert_array_equal(emb.step(tokens[:, 0])[0], emb(tokens[:, 0]))
    with pytest.raises(ValueError, match="x_t must hold token ids"):
        emb.step(np.array([7]))
    np.testing.assert_array_equal(dense.step(x[:, 0])[0], dense(x[:, 0]))
    with pytest.raises(ValueError):
        dense.step(np.ones((2, 4)))

    drop = fastrnn.Dropout(0.5, seed=0)
    x_t, state = drop.step(x[:, 0])
    assert x_t is not None and state is None
    np.testing.assert_array_equal(x_t, x[:, 0])
    y, state = drop.model_forward(x, training=True)
    dx, dstate0 = drop.model_backward(np.ones_like(x))
    assert state is None and dstate0 is None
    np.testing.assert_array_equal(dx == 0, y == 0)
    assert drop.model_backward(np.ones_like(x), input_grad=False) == (None, None)


def test_dropout_rng_state_restores_the_masks(rng):
    drop = fastrnn.Dropout(0.5, seed=3)
    x = np.ones((4, 6))
    saved = drop.rng_state
    first = drop(x, training=True)
    other = fastrnn.Dropout(0.5, seed=99)
    other.rng_state = saved
    np.testing.assert_array_equal(other(x, training=True), first)
    np.testing.assert_array_equal(drop(x, training=True), other(x, training=True))


def test_rng_state_for_a_layer_that_is_not_dropout_is_a_bad_file(tmp_path):
    from fastrnn.io import load_bundle, save_bundle

    model = fastrnn.Sequential([fastrnn.Dense(2, 2), fastrnn.Dropout(0.2, seed=0)])
    path = tmp_path / "m.fastrnn"
    model.save(path)
    arrays, meta = load_bundle(path)
    meta["rng"] = {"0": meta["rng"]["1"]}
    save_bundle(tmp_path / "bad.fastrnn", arrays, meta)
    with pytest.raises(ValueError, match="draws no dropout masks"):
        fastrnn.load_model(tmp_path / "bad.fastrnn")
    assert fastrnn.load_model(path).layers[1].rng_state == model.layers[1].rng_state


def test_truncated_bptt_leaves_no_state_on_the_layers(rng):
    x = rng.integers(0, 5, size=(3, 11))
    y = rng.integers(0, 5, size=(3, 11))
    model = fastrnn.Sequential([fastrnn.Embedding(5, 4, seed=0), fastrnn.LSTM(4, 6, seed=0),
                                fastrnn.Dense(6, 5, seed=0)])
    before = [set(vars(layer)) for layer in model.layers]
    model.fit(x, y, lengths=[11, 3, 7], loss="cce", optimizer=SGD(lr=0.1), epochs=1,
              verbose=0, truncate=4)
    assert [set(vars(layer)) for layer in model.layers] == before


def test_train_truncated_passes_the_carried_states_explicitly():
    x = np.zeros((3, 7, 1))
    y = np.zeros((3, 7))
    lengths = np.array([7, 2, 5])
    calls = []

    def train_window(xw, lw, yw, states):
        calls.append((xw.shape, None if lw is None else lw.tolist(), states))
        h = np.arange(xw.shape[0], dtype=float)[None, :, None] + 10 * len(calls)
        return 1.0, [None, (h, h + 0.5), h]

    loss, finals = train_truncated(x, lengths, y, 3, train_window)
    assert loss == 1.0
    # every row runs in every window; those that have ended as empty sequences (length 0)
    assert [c[0] for c in calls] == [(3, 3, 1), (3, 3, 1), (3, 1, 1)]
    assert [c[1] for c in calls] == [[3, 2, 3], [3, 0, 2], [1, 0, 0]]
    assert calls[0][2] is None                        # the first window starts from zeros
    none, (h, c), g = calls[1][2]                     # the first window's states, as returned
    assert none is None
    np.testing.assert_array_equal(h[0, :, 0], [10, 11, 12])
    np.testing.assert_array_equal(c[0, :, 0], [10.5, 11.5, 12.5])
    np.testing.assert_array_equal(g[0, :, 0], [10, 11, 12])
    np.testing.assert_array_equal(calls[2][2][2][0, :, 0], [20, 21, 22])
    np.testing.assert_array_equal(finals[2][0, :, 0], [30, 31, 32])   # the last window's
    start = [None, None, np.ones((1, 3, 1))]         # an explicit start (a stateful model)
    train_truncated(x, lengths, y, 3, train_window, start)
    assert calls[3][2] is start


def test_trace_records_each_layers_input_and_output_gradient(rng):
    dense = fastrnn.Dense(3, 3, activation="tanh", dtype="float64", seed=0)
    gru = fastrnn.GRU(3, 4, dtype="float64", seed=0, backend="reference")
    model = fastrnn.Sequential([dense, gru])
    x = rng.standard_normal((2, 5, 3))
    y = rng.standard_normal((2, 5, 4))
    trace = model.trace(x, y, loss="mse")
    assert len(trace.inputs) == len(trace.output_grads) == 2
    np.testing.assert_array_equal(trace.inputs[0], x)
    np.testing.assert_allclose(trace.inputs[1], dense(x))
    value, grad = fastrnn.losses.MeanSquaredError()(trace.output, y, None)
    assert trace.loss == pytest.approx(float(value))
    np.testing.assert_array_equal(trace.output_grads[1], grad)
    assert set(model.grads()) == set(model.parameters())
    # a recurrent last layer is diagnosed on its own input (the Dense's output)
    norms = gradient_norms(model, x, y, loss="mse")
    np.testing.assert_allclose(norms[1], hidden_gradient_norms(gru, dense(x), dy=grad))


def test_models_public_names_are_re_exported():
    import fastrnn.models as models

    for name in ("Sequential", "EncoderDecoder", "load_model", "History", "LAYER_CLASSES",
                 "Trace", "save_model", "train_truncated"):
        assert hasattr(models, name), name
    assert fastrnn.Sequential is models.Sequential
    assert fastrnn.load_model is models.load_model
    assert issubclass(fastrnn.LSTM, Recurrent)


def _private_attribute_uses(path):
    """``X._name`` attribute accesses in ``path`` where ``X`` is not ``self`` / ``cls``."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"{path.name}:{node.lineno}: .{name}")
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "models").glob("*.py")) +
                         [ROOT / "diagnostics.py", ROOT / "callbacks.py"],
                         ids=lambda p: p.name)
def test_model_code_never_touches_private_attributes(path):
    assert _private_attribute_uses(path) == []


def test_the_private_attribute_scan_finds_them(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f(layer, self):\n    layer._cache = 1\n    self._ok = type(layer).__name__\n")
    assert _private_attribute_uses(f) == ["m.py:2: ._cache"]
