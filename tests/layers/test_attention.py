"""The attention layers: MultiHeadAttention, PositionalEncoding, LayerNorm and
TransformerEncoderLayer (gradients against finite differences, PyTorch parity both ways,
masking, streaming steps, a Sequential that trains and survives save / load, validation)."""
import json
import math
import threading

import numpy as np
import pytest

import fastrnn
from conftest import numerical_gradient, rel_err
from fastrnn._validation import as_lengths
from fastrnn.layers.transformer import erf

#: (batch, timesteps, lengths): batch 1, length 1, odd sizes, padded batches
SHAPES = [(1, 1, None), (2, 3, [3, 1]), (3, 5, [5, 2, 4])]
SHAPE_IDS = ["b1t1", "b2t3", "b3t5"]
#: float32 against PyTorch, and float64 (where only the summation order differs)
TORCH_TOL = {"float32": 1e-5, "float64": 1e-12}


def _randomize(layer, rng, scale=0.5):
    """Every parameter drawn normal (biases and norm weights too, unlike the initialisation)."""
    layer.load_state_dict({name: scale * rng.standard_normal(p.shape)
                           for name, p in layer.parameters().items()})
    return layer


def _lengths(lengths, batch, timesteps):
    return as_lengths(None if lengths is None else np.array(lengths), batch, timesteps)


def _check_gradients(layer, x, lengths, rng, tol=1e-7):
    """The input gradient and every parameter gradient of ``sum(y * r)`` against central
    finite differences (float64)."""
    r = rng.standard_normal(layer.model_forward(x, lengths)[0].shape)

    def loss():
        return float(np.sum(layer.model_forward(x, lengths)[0] * r))

    layer.model_forward(x, lengths, training=True)
    dx, dstate = layer.model_backward(r)
    assert dstate is None
    grads = {name: g.copy() for name, g in layer.grads.items()}
    assert list(grads) == list(layer.parameters())
    assert rel_err(dx, numerical_gradient(loss, x)) < tol
    for name, p in layer.parameters().items():
        assert rel_err(grads[name], numerical_gradient(loss, p)) < tol, name


def _valid(lengths, batch, timesteps):
    if lengths is None:
        return np.ones((batch, timesteps), bool)
    return np.arange(timesteps) < np.asarray(lengths)[:, None]


# ---------------------------------------------------------------------- finite differences

@pytest.mark.parametrize("batch, timesteps, lengths", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_attention_gradients_match_finite_differences(batch, timesteps, lengths, causal, bias,
                                                      rng):
    layer = _randomize(fastrnn.MultiHeadAttention(6, 3, causal=causal, bias=bias,
                                                  dtype="float64", seed=0), rng)
    x = rng.standard_normal((batch, timesteps, 6))
    _check_gradients(layer, x, _lengths(lengths, batch, timesteps), rng)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 3, 5), (4, 7)])
@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, True)])
def test_layer_norm_gradients_match_finite_differences(shape, affine, bias, rng):
    layer = fastrnn.LayerNorm(shape[-1], eps=1e-3, elementwise_affine=affine, bias=bias,
                              dtype="float64")
    _check_gradients(_randomize(layer, rng), rng.standard_normal(shape), None, rng)


@pytest.mark.parametrize("batch, timesteps, lengths", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_positional_encoding_gradients_match_finite_differences(batch, timesteps, lengths, kind,
                                                                rng):
    layer = fastrnn.PositionalEncoding(7, 5, kind=kind, dtype="float64", seed=0)
    _check_gradients(layer, rng.standard_normal((batch, timesteps, 5)),
                     _lengths(lengths, batch, timesteps), rng)
    if kind == "learned":                   # rows past the sequences get no gradient
        assert np.all(layer.grads["weight"][timesteps:] == 0)


@pytest.mark.parametrize("batch, timesteps, lengths", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post", "pre"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_gradients_match_finite_differences(batch, timesteps, lengths, norm_first,
                                                          activation, rng):
    layer = fastrnn.TransformerEncoderLayer(4, 2, dim_feedforward=6, activation=activation,
                                            norm_first=norm_first, causal=norm_first,
                                            dtype="float64", seed=0)
    x = rng.standard_normal((batch, timesteps, 4))
    _check_gradients(_randomize(layer, rng), x, _lengths(lengths, batch, timesteps), rng)


def test_encoder_layer_without_bias_gradients(rng):
    layer = fastrnn.TransformerEncoderLayer(4, 1, dim_feedforward=3, bias=False,
                                            dtype="float64", seed=0)
    assert not any("bias" in name for name in layer.parameters())
    _check_gradients(_randomize(layer, rng), rng.standard_normal((2, 3, 4)),
                     _lengths([2, 3], 2, 3), rng)


def test_erf_is_exact_to_float64():
    x = np.concatenate([np.linspace(-7, 7, 20001), [-0.46875, 0.46875, -4.0, 4.0, 30.0]])
    want = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(erf(x) - want)) < 1e-15
    assert erf(x.astype(np.float32)).dtype == np.float32


# ---------------------------------------------------------------------- user calls

def test_user_calls_equal_the_model_calls_and_validate_dy(rng):
    x = rng.standard_normal((3, 4, 6))
    lengths = np.array([4, 1, 3])
    for layer in (fastrnn.MultiHeadAttention(6, 2, dtype="float64", seed=1),
                  fastrnn.TransformerEncoderLayer(6, 2, 5, dtype="float64", seed=1)):
        y = layer(x, lengths=lengths, training=True)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy)
        y_model, _ = layer.model_forward(x, lengths, training=True)
        np.testing.assert_array_equal(y, y_model)
        np.testing.assert_array_equal(dx, layer.model_backward(dy)[0])
        layer(x, lengths=lengths, training=True)
        with pytest.raises(ValueError, match=r"dy must have shape \(3, 4, 6\)"):
            layer.backward(dy[:, :3])
        assert layer.backward(dy, input_grad=False) is None
    for layer in (fastrnn.LayerNorm(6, dtype="float64"),
                  fastrnn.PositionalEncoding(4, 6, kind="learned", dtype="float64", seed=0)):
        y = layer(x, training=True)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy)
        np.testing.assert_array_equal(y, layer.model_forward(x, lengths, training=True)[0])
        np.testing.assert_array_equal(dx, layer.model_backward(dy)[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtypes_end_to_end(dtype, rng):
    x = rng.standard_normal((2, 3, 4))       # float64 input, cast to the layer's dtype
    layers = [fastrnn.MultiHeadAttention(4, 2, causal=True, dtype=dtype, seed=0),
              fastrnn.LayerNorm(4, dtype=dtype),
              fastrnn.PositionalEncoding(3, 4, kind="learned", dtype=dtype, seed=0),
              fastrnn.TransformerEncoderLayer(4, 2, 8, activation="gelu", dtype=dtype, seed=0)]
    for layer in layers:
        y = layer(x, training=True)
        dx = layer.backward(np.ones(y.shape, dtype))
        arrays = [y, dx, *layer.parameters().values(), *layer.grads.values()]
        assert {a.dtype for a in arrays} == {np.dtype(dtype)}, layer


def test_attention_weights_on_request(rng):
    layer = fastrnn.MultiHeadAttention(4, 2, causal=True, dtype="float64", seed=0)
    x = rng.standard_normal((2, 4, 4))
    y, weights = layer(x, lengths=[4, 2], return_weights=True)
    np.testing.assert_array_equal(y, layer(x, lengths=[4, 2]))
    assert weights.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(weights[0].sum(axis=-1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(weights[1, :, :2].sum(axis=-1), 1.0, rtol=1e-14)
    assert np.all(weights[1, :, 2:] == 0)                    # padded queries
    assert np.all(weights[1, :, :, 2:] == 0)                 # padded keys
    assert np.all(np.triu(weights[0], k=1) == 0)             # the future
    # in training, the weights returned are the caller's: editing them changes no gradient
    y, w = layer(x, training=True, return_weights=True)
    dx = layer.backward(np.ones_like(y))
    layer(x, training=True, return_weights=True)[1][...] = 0
    np.testing.assert_array_equal(layer.backward(np.ones_like(y)), dx)


def test_backward_refuses_an_input_edited_in_place(rng):
    layer = fastrnn.MultiHeadAttention(4, 2, dtype="float64", seed=0)
    x = rng.standard_normal((2, 3, 4))
    y = layer(x, training=True)
    x[0, 0, 0] += 1
    with pytest.raises(RuntimeError, match="x was modified in place"):
        layer.backward(np.ones_like(y))


def test_backward_needs_a_training_call():
    for layer in (fastrnn.MultiHeadAttention(4, 2), fastrnn.LayerNorm(4),
                  fastrnn.PositionalEncoding(3, 4), fastrnn.TransformerEncoderLayer(4, 2, 4)):
        with pytest.raises(RuntimeError, match="training=True first"):
            layer.backward(np.ones((1, 2, 4)))


def test_encoder_layer_is_trained_from_one_thread_at_a_time(rng):
    layer = fastrnn.TransformerEncoderLayer(4, 2, 4, dtype="float64", seed=0)
    x = rng.standard_normal((1, 2, 4))
    layer(x, training=True)
    errors = []

    def other():
        try:
            layer(x, training=True)
        except RuntimeError as exc:
            errors.append(str(exc))
        layer(x)                            # inference from another thread is fine

    thread = threading.Thread(target=other, name="other")
    thread.start()
    thread.join()
    assert len(errors) == 1 and "being trained in thread" in errors[0]
    layer.backward(np.ones((1, 2, 4)))


# ---------------------------------------------------------------------- masking

@pytest.mark.parametrize("make", [
    lambda: fastrnn.MultiHeadAttention(6, 3, dtype="float64", seed=2),
    lambda: fastrnn.TransformerEncoderLayer(6, 3, 7, dtype="float64", seed=2),
    lambda: fastrnn.TransformerEncoderLayer(6, 2, 7, norm_first=True, causal=True,
                                            dtype="float64", seed=2),
], ids=["mha", "encoder", "encoder-pre-causal"])
def test_padded_steps_change_nothing_and_get_no_gradient(make, rng):
    layer = _randomize(make(), rng)
    lengths = np.array([5, 2, 3])
    valid = _valid(lengths, 3, 5)
    x = rng.standard_normal((3, 5, 6))
    y = layer(x, lengths=lengths, training=True)
    dx = layer.backward(rng.standard_normal(y.shape))
    assert np.all(y[~valid] == 0) and np.all(dx[~valid] == 0)
    assert np.abs(dx[valid]).min() > 0
    garbage = x.copy()
    garbage[~valid] = 1e3 * rng.standard_normal(garbage[~valid].shape)
    # in each mode (a training call may run on the engine's kernels, a rounding apart)
    np.testing.assert_array_equal(layer(garbage, lengths=lengths, training=True), y)
    np.testing.assert_array_equal(layer(garbage, lengths=lengths),
                                  layer(x, lengths=lengths))
    # the same as each sequence alone, unpadded
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(layer(x[b:b + 1, :n])[0], y[b, :n], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("make", [
    lambda: fastrnn.MultiHeadAttention(4, 2, causal=True, dtype="float64", seed=3),
    lambda: fastrnn.TransformerEncoderLayer(4, 2, 5, causal=True, dtype="float64", seed=3),
], ids=["mha", "encoder"])
def test_causal_outputs_do_not_see_later_steps(make, rng):
    layer = _randomize(make(), rng)
    x = rng.standard_normal((2, 6, 4))
    y = layer(x)
    for t in range(6):
        later = x.copy()
        later[:, t:] = rng.standard_normal(later[:, t:].shape)
        y_later = layer(later)
        np.testing.assert_array_equal(y_later[:, :t], y[:, :t])
        assert not np.allclose(y_later[:, t], y[:, t])
    noncausal = type(layer)(**{**layer.get_config(), "causal": False})
    noncausal.load_state_dict(layer.state_dict())
    assert not np.allclose(noncausal(x)[:, 0], y[:, 0])   # step 0 sees the future without it


# ---------------------------------------------------------------------- streaming

@pytest.mark.parametrize("make", [
    lambda: fastrnn.MultiHeadAttention(6, 2, causal=True, dtype="float64", seed=4),
    lambda: fastrnn.PositionalEncoding(5, 6, dtype="float64"),
    lambda: fastrnn.PositionalEncoding(5, 6, kind="learned", dtype="float64", seed=0),
    lambda: fastrnn.LayerNorm(6, dtype="float64"),
    lambda: fastrnn.TransformerEncoderLayer(6, 3, 4, causal=True, dtype="float64", seed=4),
    lambda: fastrnn.TransformerEncoderLayer(6, 3, 4, causal=True, norm_first=True,
                                            activation="gelu", dtype="float64", seed=4),
], ids=["mha", "pe", "pe-learned", "norm", "encoder", "encoder-pre"])
def test_step_over_time_equals_one_call(make, rng):
    layer = _randomize(make(), rng)
    x = rng.standard_normal((3, 5, 6))
    y = layer(x)
    state = None
    for t in range(5):
        y_t, state = layer.step(x[:, t], state)
        np.testing.assert_allclose(y_t, y[:, t], rtol=1e-12, atol=1e-13)


def test_step_needs_causal_attention_and_a_position_within_max_len(rng):
    for layer in (fastrnn.MultiHeadAttention(4, 2), fastrnn.TransformerEncoderLayer(4, 2, 4)):
        with pytest.raises(ValueError, match="step\\(\\) needs causal=True"):
            layer.step(np.ones((1, 4)))
    pe = fastrnn.PositionalEncoding(2, 4)
    _, state = pe.step(np.ones((1, 4)))
    _, state = pe.step(np.ones((1, 4)), state)
    with pytest.raises(ValueError, match="past the PositionalEncoding's max_len=2"):
        pe.step(np.ones((1, 4)), state)
    mha = fastrnn.MultiHeadAttention(4, 2, causal=True)
    with pytest.raises(TypeError, match="state must be the tuple \\(keys, values\\)"):
        mha.step(np.ones((1, 4)), np.zeros((1, 2, 1, 2)))


def test_sinusoidal_encoding_values():
    p = fastrnn.PositionalEncoding(50, 5, dtype="float64").encoding()
    t = np.arange(50)
    np.testing.assert_allclose(p[:, 0], np.sin(t), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(p[:, 1], np.cos(t), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(p[:, 3], np.cos(t / 10000 ** (2 / 5)), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(p[:, 4], np.sin(t / 10000 ** (4 / 5)), rtol=1e-15, atol=1e-15)
    assert fastrnn.PositionalEncoding(4, 3).parameters() == {}


# ---------------------------------------------------------------------- PyTorch

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _torch_dtype(torch, dtype):
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def _to_torch(torch, arrays):
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}


def _from_torch(module):
    return {name: t.detach().numpy() for name, t in module.state_dict().items()}


def _torch_masks(torch, lengths, batch, timesteps, causal):
    pad = None if lengths is None else torch.from_numpy(~_valid(lengths, batch, timesteps))
    mask = torch.triu(torch.ones(timesteps, timesteps, dtype=torch.bool), 1) if causal else None
    return pad, mask


def _compare_with_torch(torch, ours, module, x, lengths, run_torch, dtype, rng):
    """Outputs at the valid steps, the input gradient and every parameter gradient of ours
    and of the PyTorch module holding the same weights."""
    batch, timesteps = x.shape[:2]
    valid = _valid(lengths, batch, timesteps)
    tol = TORCH_TOL[dtype]
    r = rng.standard_normal(x.shape).astype(dtype)
    y = ours(x, training=True) if lengths is None else ours(x, lengths=lengths, training=True)
    dx = ours.backward(r)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = run_torch(xt)
    (yt * torch.from_numpy(r * valid[..., None])).sum().backward()
    yt = yt.detach().numpy()
    assert rel_err(y[valid], yt[valid]) < tol
    assert rel_err(dx, xt.grad.numpy()) < tol
    torch_grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    assert list(torch_grads) == list(ours.grads)
    for name, g in torch_grads.items():
        assert rel_err(ours.grads[name], g) < tol, name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_attention_matches_torch_both_ways(torch, dtype, causal, bias, rng):
    torch.manual_seed(0)
    module = torch.nn.MultiheadAttention(8, 4, bias=bias, batch_first=True) \
        .to(_torch_dtype(torch, dtype))
    ours = fastrnn.MultiHeadAttention(8, 4, causal=causal, bias=bias, dtype=dtype, seed=0)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in module.state_dict().items()}
    ours.load_state_dict(_from_torch(module))             # PyTorch -> fastrnn
    x = rng.standard_normal((3, 5, 8)).astype(dtype)
    lengths = [5, 2, 4]
    pad, mask = _torch_masks(torch, lengths, 3, 5, causal)
    valid = _valid(lengths, 3, 5)

    def run(xt):
        return module(xt, xt, xt, key_padding_mask=pad, attn_mask=mask, need_weights=False)[0]

    _compare_with_torch(torch, ours, module, x, lengths, run, dtype, rng)
    _, w = ours(x, lengths=lengths, return_weights=True)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        wt = module(xt, xt, xt, key_padding_mask=pad, attn_mask=mask,
                    average_attn_weights=False)[1].numpy()
    assert rel_err(w.transpose(0, 2, 1, 3)[valid], wt.transpose(0, 2, 1, 3)[valid]) < \
        TORCH_TOL[dtype]
    # fastrnn -> PyTorch
    _randomize(ours, rng)
    module.load_state_dict(_to_torch(torch, ours.state_dict()))
    with torch.no_grad():
        yt = run(torch.from_numpy(x)).numpy()
    assert rel_err(ours(x, lengths=lengths)[valid], yt[valid]) < TORCH_TOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(torch, dtype, affine, rng):
    module = torch.nn.LayerNorm(6, eps=1e-4, elementwise_affine=affine) \
        .to(_torch_dtype(torch, dtype))
    ours = fastrnn.LayerNorm(6, eps=1e-4, elementwise_affine=affine, dtype=dtype)
    _randomize(ours, rng)
    module.load_state_dict(_to_torch(torch, ours.state_dict()))
    x = (3 + 2 * rng.standard_normal((2, 3, 6))).astype(dtype)
    _compare_with_torch(torch, ours, module, x, None, module, dtype, rng)
    if affine:                                               # PyTorch -> fastrnn
        with torch.no_grad():
            for p in module.parameters():
                p.normal_()
        ours.load_state_dict(_from_torch(module))
        with torch.no_grad():
            yt = module(torch.from_numpy(x)).numpy()
        assert rel_err(ours(x), yt) < TORCH_TOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post", "pre"])
@pytest.mark.parametrize("activation, causal", [("relu", False), ("gelu", True)])
def test_encoder_layer_matches_torch_both_ways(torch, dtype, norm_first, activation, causal,
                                               rng):
    torch.manual_seed(1)
    module = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0,
                                              activation=activation, batch_first=True,
                                              norm_first=norm_first) \
        .to(_torch_dtype(torch, dtype))
    ours = fastrnn.TransformerEncoderLayer(8, 2, dim_feedforward=12, activation=activation,
                                           norm_first=norm_first, causal=causal, dtype=dtype,
                                           seed=0)
    assert list(ours.state_dict()) == list(module.state_dict())
    ours.load_state_dict(_from_torch(module))               # PyTorch -> fastrnn
    x = rng.standard_normal((3, 6, 8)).astype(dtype)
    lengths = [6, 3, 1]
    valid = _valid(lengths, 3, 6)
    pad, mask = _torch_masks(torch, lengths, 3, 6, causal)

    def run(xt):
        return module(xt, src_mask=mask, src_key_padding_mask=pad, is_causal=causal)

    module.train()              # dropout=0.0: training mode is the plain (slow) path
    _compare_with_torch(torch, ours, module, x, lengths, run, dtype, rng)
    # fastrnn -> PyTorch, compared with PyTorch's eval-mode inference, whose fast path (nested
    # tensors) may treat the padded steps differently: the valid steps only
    _randomize(ours, rng, scale=0.3)
    module.load_state_dict(_to_torch(torch, ours.state_dict()))
    module.eval()
    with torch.no_grad():
        yt = run(torch.from_numpy(x)).numpy()
    assert rel_err(ours(x, lengths=lengths)[valid], yt[valid]) < TORCH_TOL[dtype]


def test_gelu_matches_torch(torch, rng):
    from fastrnn.layers.transformer import FEEDFORWARD_ACTIVATIONS

    u = 4 * rng.standard_normal(1000)
    gelu, grad = FEEDFORWARD_ACTIVATIONS["gelu"]
    ut = torch.from_numpy(u.copy()).requires_grad_(True)
    yt = torch.nn.functional.gelu(ut)
    yt.sum().backward()
    assert rel_err(gelu(u), yt.detach().numpy()) < 1e-15
    assert rel_err(grad(u, np.ones_like(u)), ut.grad.numpy()) < 1e-15


# ---------------------------------------------------------------------- in a model

def _previous_token_task(rng, n=96, vocab=6, timesteps=8):
    """Target at step t: the token at step t - 1 (0 at step 0); ragged lengths."""
    x = rng.integers(1, vocab, size=(n, timesteps))
    lengths = rng.integers(3, timesteps + 1, size=n)
    y = np.concatenate([np.zeros((n, 1), np.int64), x[:, :-1]], axis=1)
    return x, y, lengths


def _language_model(causal=True, norm_first=False):
    return fastrnn.Sequential([
        fastrnn.Embedding(6, 16, seed=0),
        fastrnn.PositionalEncoding(10, 16, kind="learned", seed=1),
        fastrnn.TransformerEncoderLayer(16, 2, dim_feedforward=32, causal=causal,
                                        norm_first=norm_first, seed=2),
        fastrnn.Dense(16, 6, seed=3),
    ])


def test_a_transformer_sequential_trains_and_survives_save_and_load(tmp_path, rng):
    x, y, lengths = _previous_token_task(rng)
    model = _language_model()
    history = model.fit(x, y, lengths=lengths, loss="cce",
                        optimizer=fastrnn.optim.Adam(lr=0.01), epochs=15, batch_size=16,
                        verbose=0, metrics=("accuracy",))
    loss = history["loss"]
    assert loss[-1] < 0.2 * loss[0]             # from ~log(6) to a task it learns
    assert history["accuracy"][-1] > 0.9
    path = tmp_path / "transformer.fastrnn"
    model.save(path)
    loaded = fastrnn.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert loaded.layers[2].get_config() == model.layers[2].get_config()
    np.testing.assert_array_equal(loaded.predict(x, lengths), model.predict(x, lengths))
    for name, p in model.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[name], p)
    # training goes on from the same optimizer state in both
    more = dict(lengths=lengths, epochs=16, batch_size=16, verbose=0)
    model.fit(x, y, **more)
    loaded.fit(x, y, **more)
    np.testing.assert_array_equal(loaded.predict(x, lengths), model.predict(x, lengths))


def test_greedy_generation_with_a_causal_transformer(rng):
    model = _language_model(norm_first=True)
    for layer in model.layers[1:]:
        _randomize(layer, rng)
    out = model.generate(np.array([[1, 2], [3, 4]]), steps=4, greedy=True)
    # each token is the argmax of the whole-sequence prediction on what came before
    tokens = np.array([[1, 2], [3, 4]])
    for t in range(4):
        logits = model.predict(tokens)[:, -1]
        np.testing.assert_array_equal(out[:, t], logits.argmax(axis=1))
        tokens = np.concatenate([tokens, out[:, t:t + 1]], axis=1)


def test_attention_first_in_a_sequential_with_float_input(tmp_path, rng):
    x = rng.standard_normal((40, 6, 4))
    lengths = rng.integers(2, 7, size=40)
    y = np.cumsum(x, axis=1)[..., :2]                       # a running sum: needs the past
    model = fastrnn.Sequential([
        fastrnn.PositionalEncoding(6, 4, dtype="float64"),
        fastrnn.MultiHeadAttention(4, 2, causal=True, dtype="float64", seed=0),
        fastrnn.LayerNorm(4, dtype="float64"),
        fastrnn.Dense(4, 2, dtype="float64", seed=0),
    ])
    text = model.summary(print_fn=None)
    assert "weights: 76  biases: 22" in text            # 48 + 16 + 4 + 8; 12 + 4 + 4 + 2
    history = model.fit(x, y, lengths=lengths, loss="mse", optimizer="adam", epochs=5,
                        batch_size=8, verbose=0)
    assert history["loss"][-1] < history["loss"][0]
    model.save(tmp_path / "m.fastrnn")
    loaded = fastrnn.load_model(tmp_path / "m.fastrnn")
    np.testing.assert_array_equal(loaded.predict(x, lengths), model.predict(x, lengths))
    with pytest.raises(ValueError, match=r"X must have shape \(any, any, 4\)"):
        model.predict(np.ones((2, 6, 5)))


@pytest.mark.parametrize("layer", [
    fastrnn.MultiHeadAttention(6, 3, causal=True, bias=False, dtype="float64"),
    fastrnn.PositionalEncoding(9, 6, kind="learned"),
    fastrnn.LayerNorm(6, eps=1e-3, elementwise_affine=True, bias=False),
    fastrnn.TransformerEncoderLayer(6, 2, 10, activation="gelu", layer_norm_eps=1e-6,
                                    norm_first=True, causal=True, dtype="float64"),
], ids=lambda layer: type(layer).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    assert json.loads(json.dumps(config)) == config
    rebuilt = type(layer)(**config)
    assert rebuilt.get_config() == config
    assert {k: (v.shape, v.dtype) for k, v in rebuilt.parameters().items()} == \
        {k: (v.shape, v.dtype) for k, v in layer.parameters().items()}
    assert fastrnn.models.LAYER_CLASSES[type(layer).__name__] is type(layer)


# ---------------------------------------------------------------------- validation

def test_constructor_errors():
    with pytest.raises(ValueError, match=r"embed_dim \(6\) must be divisible by num_heads \(4\)"):
        fastrnn.MultiHeadAttention(6, 4)
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        fastrnn.MultiHeadAttention(6, 0)
    with pytest.raises(ValueError, match="kind must be one of 'sinusoidal', 'learned'"):
        fastrnn.PositionalEncoding(5, 4, kind="rotary")
    with pytest.raises(TypeError, match="normalized_shape must be an integer"):
        fastrnn.LayerNorm((4,))
    with pytest.raises(ValueError, match=r"eps must be in \(0.0, inf\)"):
        fastrnn.LayerNorm(4, eps=0.0)
    with pytest.raises(ValueError, match="dropout inside TransformerEncoderLayer is not "
                                         "supported, got 0.1"):
        fastrnn.TransformerEncoderLayer(4, 2, dropout=0.1)
    with pytest.raises(ValueError, match="activation must be one of 'relu', 'gelu'"):
        fastrnn.TransformerEncoderLayer(4, 2, activation="tanh")
    with pytest.raises(ValueError, match="must be divisible by num_heads"):
        fastrnn.TransformerEncoderLayer(6, 4)


def test_call_errors(rng):
    mha = fastrnn.MultiHeadAttention(6, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(any, any, 6\), got \(2, 3, 4\)"):
        mha(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        mha(np.ones((3, 6)))
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        mha(np.full((1, 2, 6), np.nan))
    with pytest.raises(ValueError, match=r"lengths must be in 1\.\.3"):
        mha(np.ones((2, 3, 6)), lengths=[3, 4])
    with pytest.raises(TypeError, match="training must be True or False"):
        mha(np.ones((2, 3, 6)), training=1)
    pe = fastrnn.PositionalEncoding(4, 6)
    with pytest.raises(ValueError, match="the sequences have 5 timesteps, more than the "
                                         "PositionalEncoding's max_len=4"):
        pe(np.ones((1, 5, 6)))
    with pytest.raises(ValueError, match=r"x must have shape \(any, 5\)"):
        fastrnn.LayerNorm(5)(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"x must have shape \(any, any, 6\)"):
        fastrnn.TransformerEncoderLayer(6, 2, 4)(np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match=r"x_t must have shape \(any, 6\)"):
        fastrnn.MultiHeadAttention(6, 3, causal=True).step(np.ones((2, 5)))


def test_state_dict_errors_leave_the_layer_unchanged():
    layer = fastrnn.MultiHeadAttention(4, 2, seed=0)
    before = layer.state_dict()
    with pytest.raises(ValueError, match=r"missing \['out_proj.bias'\]"):
        layer.load_state_dict({k: v for k, v in before.items() if k != "out_proj.bias"})
    bad = dict(before, in_proj_weight=np.zeros((4, 12)))
    with pytest.raises(ValueError, match=r"state_dict\['in_proj_weight'\] must have shape "
                                         r"\(12, 4\)"):
        layer.load_state_dict(bad)
    for name, p in layer.parameters().items():
        np.testing.assert_array_equal(p, before[name])


def test_model_errors():
    model = _language_model()
    with pytest.raises(ValueError, match="the sequences have 11 timesteps, more than the "
                                         "PositionalEncoding's max_len=10"):
        model.predict(np.ones((2, 11), np.int64))
    with pytest.raises(ValueError, match=r"X must be token ids of shape \(batch, timesteps\) "
                                         r"for the PositionalEncoding layer"):
        model.predict(np.ones(3, np.int64))
    with pytest.raises(ValueError, match="truncate cuts the sequences into windows"):
        model.fit(np.ones((2, 4), np.int64), np.ones((2, 4), np.int64), loss="cce",
                  optimizer="sgd", truncate=2, verbose=0)


# ---------------------------------------------------------------------- the fast softmax

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1.0, 20.0, 100.0], ids=["small", "in-range", "large"])
@pytest.mark.parametrize("masked", [False, True], ids=["all", "masked"])
def test_masked_softmax_matches_the_textbook_one(dtype, scale, masked, rng):
    """The fast softmax (no row max while every score is within +-EXP_SAFE, the masked
    entries zeroed after exp) against the textbook one, inside and outside that range."""
    from fastrnn.layers.attention import EXP_SAFE, _masked_softmax, softmax_reference
    scores = (scale * rng.standard_normal((3, 2, 5, 7))).astype(dtype)
    allowed = None
    if masked:
        allowed = rng.random((3, 1, 5, 7)) < 0.6
        allowed[..., 0] = True                     # every row allows one entry
    assert (np.abs(scores).max() <= EXP_SAFE) == (scale < 100)
    want = softmax_reference(scores, allowed)
    got = _masked_softmax(scores.copy(), allowed)
    assert got.dtype == scores.dtype
    assert np.allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-13, atol=0)
    if masked:
        assert np.all(got[~np.broadcast_to(allowed, got.shape)] == 0)
    assert np.allclose(got.sum(axis=-1), 1.0)


def test_masked_softmax_keeps_a_nan():
    from fastrnn.layers.attention import _masked_softmax
    scores = np.zeros((2, 3))
    scores[1, 2] = np.nan
    got = _masked_softmax(scores, None)
    assert np.allclose(got[0], 1 / 3) and np.all(np.isnan(got[1]))
