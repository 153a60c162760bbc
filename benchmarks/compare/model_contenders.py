"""The contenders of the model rows (``configs.MODEL_CONFIGS``): one training step of a whole
model with attention, in fastrnn and the same architecture in PyTorch.

A step is forward, the mean cross-entropy of every target, backward and a plain SGD update
(``SGD_LR``, tiny, as for the layer rows). fastrnn's step is one call of the model's public
``fit`` on one batch (``epochs=1, initial_epoch=0, shuffle=False, verbose=0``); what ``fit``
adds around the forward, backward and update (validating the batch, checking that the loss
and gradients are finite, the epoch's bookkeeping) is part of the time, as a user pays it.
PyTorch's step is ``zero_grad``, the module, ``F.cross_entropy``, ``backward``, ``step``.
The check compares the loss and every parameter's gradient of one step from the row's weights.
"""
from __future__ import annotations

import numpy as np

from .configs import ModelConfig, make_model_data
from .contenders import SGD_LR, Runner, Unavailable


# ---------------------------------------------------------------------------- fastrnn


def fastrnn_model(fastrnn, cfg: ModelConfig, backend: str):
    """The row's model in fastrnn (its weights not loaded yet)."""
    if cfg.kind == "seq2seq":
        return fastrnn.EncoderDecoder(cfg.vocab, cfg.vocab, cfg.E, cfg.H, cell=cfg.cell,
                                      attention=cfg.attention, seed=0, backend=backend)
    return fastrnn.Sequential([
        fastrnn.TransformerEncoderLayer(cfg.H, cfg.heads, dim_feedforward=cfg.ff, seed=0),
        fastrnn.GlobalAveragePooling1D(),
        fastrnn.Dense(cfg.H, cfg.vocab, seed=0),
    ])


def fastrnn_model_runner(fastrnn, cfg: ModelConfig, backend: str, weights: dict,
                         name: str) -> Runner:
    if backend != "compiled":
        raise Unavailable("model rows run fastrnn's compiled backend only (the attention "
                          "layers have one NumPy path; the reference would time NumPy's GRU)")
    if not hasattr(fastrnn, "TransformerEncoderLayer"):
        raise Unavailable("fastrnn has no attention layers")
    model = fastrnn_model(fastrnn, cfg, backend)
    opt = fastrnn.optim.SGD(lr=SGD_LR)
    x, y = make_model_data(cfg)
    if cfg.kind == "seq2seq":
        def step():
            return model.fit(x, y, optimizer=opt, epochs=1, initial_epoch=0,
                             batch_size=cfg.B, shuffle=False, verbose=0)
    else:
        def step():
            return model.fit(x, y, loss="cce", optimizer=opt, epochs=1, initial_epoch=0,
                             batch_size=cfg.B, shuffle=False, verbose=0)

    def check():
        model.load_state_dict({k: v.copy() for k, v in weights.items()})
        history = step()     # the gradients are those before the update
        got = {f"grad_{k}": np.array(v) for k, v in model.grads().items()}
        got["loss"] = np.array(history["loss"][0])
        return got

    return Runner(name, step, check)


# ---------------------------------------------------------------------------- torch


def torch_model(torch, cfg: ModelConfig):
    """The row's architecture in PyTorch, its parameters named as fastrnn's ``state_dict``."""
    nn = torch.nn
    H, V = cfg.H, cfg.vocab
    if cfg.kind == "transformer":
        class MeanOverTime(nn.Module):
            def forward(self, x):
                return x.mean(dim=1)

        return nn.Sequential(
            nn.TransformerEncoderLayer(H, cfg.heads, cfg.ff, dropout=0.0, batch_first=True),
            MeanOverTime(), nn.Linear(H, V))

    class Additive(nn.Module):
        """``softmax_s(v^T tanh(W_q q_t + W_k m_s + b)) m``, as a PyTorch user writes it."""

        def __init__(self):
            super().__init__()
            self.query_weight = nn.Parameter(torch.empty(H, H))
            self.key_weight = nn.Parameter(torch.empty(H, H))
            self.bias = nn.Parameter(torch.empty(H))
            self.score_weight = nn.Parameter(torch.empty(H))

        def forward(self, q, m):
            keys = m @ self.key_weight.T + self.bias
            hidden = torch.tanh((q @ self.query_weight.T).unsqueeze(2) + keys.unsqueeze(1))
            return torch.softmax(hidden @ self.score_weight, dim=-1) @ m

    class General(nn.Module):
        """Luong's ``softmax_s(q_t^T W m_s) m``."""

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(H, H))

        def forward(self, q, m):
            scores = q @ (m @ self.weight.T).transpose(1, 2)
            return torch.softmax(scores, dim=-1) @ m

    rnn = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[cfg.cell]

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.source_embedding = nn.Embedding(V, cfg.E, padding_idx=0)
            self.encoder = rnn(cfg.E, H, batch_first=True)
            self.target_embedding = nn.Embedding(V, cfg.E, padding_idx=0)
            self.decoder = rnn(cfg.E, H, batch_first=True)
            self.attention = Additive() if cfg.attention == "bahdanau" else General()
            self.combine = nn.Linear(2 * H, H, bias=False)
            self.output = nn.Linear(H, V)

        def forward(self, src, dec_in):
            memory, state = self.encoder(self.source_embedding(src))
            y, _ = self.decoder(self.target_embedding(dec_in), state)
            context = self.attention(y, memory)
            return self.output(torch.tanh(self.combine(torch.cat([context, y], dim=-1))))

    return Seq2Seq()


def torch_model_runner(torch, cfg: ModelConfig, weights: dict) -> Runner:
    F = torch.nn.functional
    m = torch_model(torch, cfg).train()
    x, y = (torch.from_numpy(a) for a in make_model_data(cfg))
    if cfg.kind == "seq2seq":
        bos = 1     # EncoderDecoder's default bos_id: teacher forcing reads <bos> + target[:-1]
        dec_in = torch.cat([torch.full((cfg.B, 1), bos, dtype=y.dtype), y[:, :-1]], dim=1)

        def loss():
            return F.cross_entropy(m(x, dec_in).reshape(-1, cfg.vocab), y.reshape(-1))
    else:
        def loss():
            return F.cross_entropy(m(x), y)
    opt = torch.optim.SGD(m.parameters(), lr=SGD_LR)

    def run():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    def check():
        m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
        opt.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        got = {f"grad_{k}": p.grad.numpy().copy() for k, p in m.named_parameters()}
        got["loss"] = np.array(value.item())
        return got

    return Runner("torch", run, check)

