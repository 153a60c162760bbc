"""Same numbers as PyTorch: forward, packed variable lengths and gradients (skipped without torch)."""
import numpy as np
import pytest

import fastrnn
from conftest import LSTM_PROJ, VARIANTS, has_c, make_layer, proj_size, state_arrays, state_size

torch = pytest.importorskip("torch")

#: the cells PyTorch has (its nn.RNN has no leaky relu, its LSTM no peepholes), and its LSTM
#: with a projection (proj_size)
TORCH_CELLS = [c for c in VARIANTS
               if c not in ("rnn_leaky_relu", "lstm_peephole", "gru_reset_before")]


def torch_module(cell, input_size, hidden_size, **kwargs):
    if cell.startswith("rnn_"):
        return torch.nn.RNN(input_size, hidden_size, nonlinearity=cell[4:], batch_first=True,
                            **kwargs)
    if cell == LSTM_PROJ:
        return torch.nn.LSTM(input_size, hidden_size, batch_first=True,
                             proj_size=proj_size(hidden_size), **kwargs)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    return cls(input_size, hidden_size, batch_first=True, **kwargs)


def run_torch(module, x, state, lengths):
    """Outputs of a PyTorch module on padded ``x``, packed when ``lengths`` is given."""
    T = x.shape[1]
    inp = x
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
    out, final = module(inp, state)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    return out, final


@pytest.mark.parametrize("cell", TORCH_CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("backend", fastrnn.layers.BACKENDS)
def test_forward_and_gradients_match_pytorch(cell, bidirectional, variable, backend):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    module = torch_module(cell, 5, 6, num_layers=2, bidirectional=bidirectional).double()
    layer = make_layer(cell, 5, 6, num_layers=2, bidirectional=bidirectional, dtype="float64",
                       backend=backend)
    layer.load_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})

    B, T, D = 4, 7, 2 if bidirectional else 1
    x = rng.standard_normal((B, T, 5))
    lengths = np.array([3, 7, 1, 6]) if variable else None
    h0 = rng.standard_normal((2 * D, B, state_size(cell, 6)))
    c0 = rng.standard_normal((2 * D, B, 6))
    lstm = has_c(cell)
    state = (h0, c0) if lstm else h0

    x_t = torch.tensor(x, requires_grad=True)
    state_t = tuple(torch.tensor(s, requires_grad=True) for s in state_arrays(state))
    out_t, final_t = run_torch(module, x_t, state_t if lstm else state_t[0], lengths)

    y, final = layer(x, state, lengths=lengths, training=True)
    np.testing.assert_allclose(y, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(state_arrays(final), state_arrays(final_t)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)

    dy = rng.standard_normal(y.shape)
    dfinal = [rng.standard_normal(s.shape) for s in state_arrays(final)]
    loss = (out_t * torch.tensor(dy)).sum() + sum(
        (s * torch.tensor(d)).sum() for s, d in zip(state_arrays(final_t), dfinal))
    loss.backward()
    dx, dstate0 = layer.backward(dy, tuple(dfinal) if lstm else dfinal[0])
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-9, atol=1e-12)
    for a, b in zip(state_arrays(dstate0), state_t):
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(layer.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_float32_weights_export_back_to_pytorch(cell):
    layer = make_layer(cell, 3, 4, num_layers=2, seed=0)
    module = torch_module(cell, 3, 4, num_layers=2)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
    y, _ = layer(x)
    with torch.no_grad():
        out, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(y, out.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_state_dicts_have_pytorchs_names_order_and_shapes(cell):
    """A fastrnn layer's state_dict and a PyTorch module's (weight_hr_l{k} of the projected
    LSTM included) list the same names, in the same order, with the same shapes."""
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, seed=0)
    module = torch_module(cell, 3, 5, num_layers=2, bidirectional=True)
    ours = {k: v.shape for k, v in layer.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert list(ours.items()) == list(theirs.items())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", fastrnn.layers.BACKENDS)
def test_projected_lstm_matches_pytorch_in_both_dtypes(dtype, backend):
    """LSTM(proj_size=P), odd sizes, stacked and bidirectional, packed lengths and initial
    states, float32 and float64: PyTorch's outputs, final states and every gradient."""
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    module = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True, proj_size=3,
                           batch_first=True).to(tdtype)
    layer = fastrnn.LSTM(5, 7, num_layers=2, bidirectional=True, proj_size=3, dtype=dtype,
                         backend=backend)
    layer.load_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})
    lengths = np.array([6, 1, 4])
    x = rng.standard_normal((3, 6, 5)).astype(dtype)
    h0 = rng.standard_normal((4, 3, 3)).astype(dtype)
    c0 = rng.standard_normal((4, 3, 7)).astype(dtype)
    x_t = torch.tensor(x, requires_grad=True)
    h0_t, c0_t = (torch.tensor(s, requires_grad=True) for s in (h0, c0))
    out_t, (h_t, c_t) = run_torch(module, x_t, (h0_t, c0_t), lengths)
    y, (h, c) = layer(x, (h0, c0), lengths=lengths, training=True)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    for a, b in ((y, out_t), (h, h_t), (c, c_t)):
        np.testing.assert_allclose(a, b.detach().numpy(), **tol)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dh, dc = rng.standard_normal(h.shape).astype(dtype), rng.standard_normal(c.shape).astype(dtype)
    ((out_t * torch.tensor(dy)).sum() + (h_t * torch.tensor(dh)).sum()
     + (c_t * torch.tensor(dc)).sum()).backward()
    dx, (dh0, dc0) = layer.backward(dy, (dh, dc))
    for a, b in ((dx, x_t), (dh0, h0_t), (dc0, c0_t)):
        np.testing.assert_allclose(a, b.grad.numpy(), **tol)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(layer.grads[name], p.grad.numpy(), **tol)
