"""The benchmark rows (one definition, used by the comparison and by the pytest-benchmark suite)
and the data every contender of a row gets: PyTorch-named weights and inputs."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fastrnn.cell_table import GATES


@dataclass(frozen=True)
class Config:
    """One benchmark row.

    mode: ``forward`` (full-length batch), ``packed`` (variable lengths), ``stream`` (one step per
    call, batch 1), ``train`` / ``train_packed`` (forward + backward + SGD update).
    """

    name: str
    kind: str
    B: int
    T: int
    I: int
    H: int
    mode: str = "forward"
    nonlinearity: str = "tanh"
    lengths_range: Optional[tuple] = None
    small: bool = False  # cheap enough for the NumPy reference in --quick mode

    @property
    def cell(self) -> str:
        """The row's cell name in :mod:`fastrnn.cell_table` (``kind`` with the RNN's
        nonlinearity)."""
        return f"rnn_{self.nonlinearity}" if self.kind == "rnn" else self.kind

    def describe(self) -> str:
        k = self.kind if self.kind != "rnn" else f"rnn-{self.nonlinearity}"
        if self.mode == "stream":
            return f"{k} stream B=1 I={self.I} H={self.H}"
        s = f"{k} B={self.B} T={self.T} I={self.I} H={self.H}"
        if self.lengths_range:
            s += f" len={self.lengths_range[0]}..{self.lengths_range[1]}"
        if self.mode.startswith("train"):
            s = "train " + s
        return s

    def lengths(self) -> Optional[np.ndarray]:
        if not self.lengths_range:
            return None
        lo, hi = self.lengths_range
        rng = np.random.default_rng(20240601)
        return rng.integers(lo, hi + 1, size=self.B).astype(np.int64)

    def valid_steps(self) -> int:
        """Number of (sequence, timestep) pairs actually computed."""
        if self.mode == "stream":
            return 1
        lens = self.lengths()
        if lens is None:
            return self.B * self.T
        return int(lens.sum())

    def flops(self) -> float:
        """GEMM flops of one call: 2 * steps * G * H * (I + H); for a training step
        2 * steps * G * H * (2I + 3H): the forward, the weight gradients (I + H) and the state
        gradient (H), no input gradient (x is data)."""
        per = 2.0 * self.valid_steps() * GATES[self.cell] * self.H
        if self.mode.startswith("train"):
            return per * (2 * self.I + 3 * self.H)
        return per * (self.I + self.H)


FORWARD_CONFIGS = [
    Config("F1", "lstm", 1, 100, 32, 64, small=True),
    Config("F2", "lstm", 32, 100, 32, 64, small=True),
    Config("F3", "lstm", 64, 50, 128, 128, small=True),
    Config("F4", "lstm", 4, 25, 512, 512, small=True),
    Config("F5", "lstm", 1, 150, 256, 256, small=True),
    Config("F6", "gru", 64, 50, 128, 128, small=True),
    Config("F7", "rnn", 1, 672, 32, 32, nonlinearity="relu", small=True),
    Config("F8", "lstm", 32, 50, 512, 512),
]

PACKED_CONFIGS = [
    Config("P1", "lstm", 64, 100, 64, 128, mode="packed", lengths_range=(10, 100)),
    # The same batch padded to full length, no lengths: fastrnn's P1/P1pad ratio is printed.
    Config("P1pad", "lstm", 64, 100, 64, 128),
]

STREAM_CONFIGS = [
    Config("S1", "lstm", 1, 1, 32, 32, mode="stream", small=True),
    Config("S2", "lstm", 1, 1, 128, 128, mode="stream", small=True),
    Config("S3", "gru", 1, 1, 128, 128, mode="stream", small=True),
]

# Sizes next to powers of two: odd sizes should cost what their flop count says, no more.
ODD_CONFIGS = [
    Config(f"N{h}", "lstm", 32, 50, h, h) for h in (127, 128, 129, 255, 256, 257)
]

# Training rows: run when fastrnn's layers have a working backward (``fastrnn_can_train``), or
# forced with --training on (PyTorch only then).
TRAIN_CONFIGS = [
    Config("T1", "lstm", 32, 100, 32, 64, mode="train", small=True),
    Config("T2", "lstm", 64, 50, 128, 128, mode="train"),
    Config("T3", "lstm", 16, 150, 256, 256, mode="train"),
    Config("T4", "gru", 64, 50, 128, 128, mode="train"),
    Config("T5", "rnn", 64, 50, 128, 128, mode="train", nonlinearity="tanh"),
    Config("T6", "lstm", 32, 25, 512, 512, mode="train"),
    Config("P2", "lstm", 64, 100, 64, 128, mode="train_packed", lengths_range=(10, 100)),
]



@dataclass(frozen=True)
class ModelConfig:
    """A training row of a whole model with attention (mode ``train_model``): one step of
    forward, cross-entropy loss, backward and SGD update, through the model's ``fit``.

    kind ``seq2seq``: ``fastrnn.EncoderDecoder(vocab, vocab, E, H, cell, attention)`` on ``B``
    pairs of ``T`` source and ``T_out`` target tokens (every sequence full length), teacher
    forced. kind ``transformer``: ``TransformerEncoderLayer(H, heads, ff)`` (post-norm, ReLU)
    -> ``GlobalAveragePooling1D`` -> ``Dense(H, vocab)`` on ``B`` sequences of ``T`` steps of
    ``H`` features, one class of ``vocab`` each.
    """

    name: str
    kind: str
    B: int
    T: int
    H: int
    vocab: int
    E: int = 0
    T_out: int = 0
    cell: str = "gru"
    attention: str = "bahdanau"
    heads: int = 0
    ff: int = 0
    mode: str = "train_model"
    small: bool = False
    lengths_range: Optional[tuple] = None

    def describe(self) -> str:
        if self.kind == "seq2seq":
            return (f"train s2s {self.cell}+{self.attention} B={self.B} "
                    f"T={self.T}/{self.T_out} H={self.H}")
        return (f"train transformer B={self.B} T={self.T} d={self.H} h={self.heads} "
                f"ff={self.ff}")

    def lengths(self) -> Optional[np.ndarray]:
        return None

    def flops(self) -> float:
        """The matrix products of one training step: 3x those of the forward (the forward,
        the weight gradients and the input gradients; the embeddings' gathers not counted)."""
        B, T, H = self.B, self.T, self.H
        if self.kind == "seq2seq":
            To, E = self.T_out, self.E
            gates = GATES[self.cell]
            rnn = 2.0 * B * (T + To) * gates * H * (E + H)
            if self.attention == "bahdanau":   # W_q h, W_k m, v^T tanh(.), sum_s a m
                att = 2.0 * B * (To + T) * H * H + 2.0 * 2 * B * To * T * H
            else:                               # W m, q k^T, sum_s a m
                att = 2.0 * B * T * H * H + 2.0 * 2 * B * To * T * H
            head = 2.0 * B * To * (2 * H * H + H * self.vocab)
            return 3.0 * (rnn + att + head)
        proj = 2.0 * B * T * (4 * H * H + 2 * H * self.ff)
        scores = 2.0 * 2 * B * T * T * H
        return 3.0 * (proj + scores + 2.0 * B * H * self.vocab)


# Whole models with attention (issue 15, item 5), against the same architecture in PyTorch.
MODEL_CONFIGS = [
    ModelConfig("A1", "seq2seq", 32, 40, 128, 40, E=64, T_out=40, cell="gru",
                attention="bahdanau"),
    ModelConfig("A2", "transformer", 32, 64, 128, 10, heads=4, ff=256, small=True),
]

TRAIN_CONFIGS = TRAIN_CONFIGS + MODEL_CONFIGS
INFERENCE_CONFIGS = FORWARD_CONFIGS + PACKED_CONFIGS + STREAM_CONFIGS + ODD_CONFIGS
ALL_CONFIGS = INFERENCE_CONFIGS + TRAIN_CONFIGS


def select_configs(only: Optional[str], training: str) -> list:
    """The rows of a run: ``--only`` names (P1 brings its padded twin), else every inference row
    and, unless ``training`` is ``off``, the training rows."""
    configs = INFERENCE_CONFIGS + (TRAIN_CONFIGS if training in ("auto", "on") else [])
    if not only:
        return configs
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    by_name = {c.name.lower(): c for c in ALL_CONFIGS}
    unknown = [w for w in wanted if w.lower() not in by_name]
    if unknown:
        raise SystemExit(f"--only: unknown config(s) {unknown}; known: {[c.name for c in ALL_CONFIGS]}")
    configs = [by_name[w.lower()] for w in wanted]
    # P1's padded twin is needed for the P1/padded ratio
    if any(c.name == "P1" for c in configs) and not any(c.name == "P1pad" for c in configs):
        configs.append(by_name["p1pad"])
    return configs


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def make_weights(cfg: Config, seed: int = 0) -> dict:
    """PyTorch-named float32 weights, uniform in +-1/sqrt(H) like PyTorch's default init."""
    if isinstance(cfg, ModelConfig):
        return make_model_weights(cfg, seed)
    rng = np.random.default_rng(seed)
    G, H, I = GATES[cfg.cell], cfg.H, cfg.I
    k = 1.0 / math.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(np.float32)

    return {
        "weight_ih_l0": u(G * H, I),
        "weight_hh_l0": u(G * H, H),
        "bias_ih_l0": u(G * H),
        "bias_hh_l0": u(G * H),
    }


def make_input(cfg: Config, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if cfg.mode == "stream":
        return rng.standard_normal((1, cfg.I)).astype(np.float32)
    return rng.standard_normal((cfg.B, cfg.T, cfg.I)).astype(np.float32)


def stream_inputs(cfg: Config, n: int, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, cfg.I)).astype(np.float32)


def valid_mask(cfg: Config) -> np.ndarray:
    """(B, T, 1) float32 mask of valid steps."""
    lens = cfg.lengths()
    if lens is None:
        return np.ones((cfg.B, cfg.T, 1), np.float32)
    return (np.arange(cfg.T)[None, :] < lens[:, None]).astype(np.float32)[:, :, None]


# --------------------------------------------------------------------------------------------
# Data of the model rows
# --------------------------------------------------------------------------------------------


def model_shapes(cfg: ModelConfig) -> dict:
    """The model's parameters: ``name -> shape``, in the names of fastrnn's ``state_dict``
    (which the PyTorch contender's modules are built to share)."""
    H, V = cfg.H, cfg.vocab
    if cfg.kind == "seq2seq":
        G, E = GATES[cfg.cell], cfg.E
        shapes = {}
        for side in ("source", "target"):
            rnn = "encoder" if side == "source" else "decoder"
            shapes[f"{side}_embedding.weight"] = (V, E)
            shapes.update({f"{rnn}.weight_ih_l0": (G * H, E), f"{rnn}.weight_hh_l0": (G * H, H),
                           f"{rnn}.bias_ih_l0": (G * H,), f"{rnn}.bias_hh_l0": (G * H,)})
        if cfg.attention == "bahdanau":
            shapes.update({"attention.query_weight": (H, H), "attention.key_weight": (H, H),
                           "attention.bias": (H,), "attention.score_weight": (H,)})
        else:
            shapes["attention.weight"] = (H, H)
        shapes.update({"combine.weight": (H, 2 * H), "output.weight": (V, H),
                       "output.bias": (V,)})
        return shapes
    F = cfg.ff
    return {"0.self_attn.in_proj_weight": (3 * H, H), "0.self_attn.in_proj_bias": (3 * H,),
            "0.self_attn.out_proj.weight": (H, H), "0.self_attn.out_proj.bias": (H,),
            "0.linear1.weight": (F, H), "0.linear1.bias": (F,),
            "0.linear2.weight": (H, F), "0.linear2.bias": (H,),
            "0.norm1.weight": (H,), "0.norm1.bias": (H,), "0.norm2.weight": (H,),
            "0.norm2.bias": (H,), "2.weight": (V, H), "2.bias": (V,)}


def make_model_weights(cfg: ModelConfig, seed: int = 0) -> dict:
    """float32 weights of a model row: matrices and biases uniform in +-1/sqrt(fan-in), the
    embeddings standard normal (row 0, the padding token, zero), the layer norms at weight
    1 +- 0.1 and bias +-0.1 (so that their gradients are not trivially those of 1 and 0)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in model_shapes(cfg).items():
        if name.endswith("embedding.weight"):
            w = rng.standard_normal(shape)
            w[0] = 0.0
        elif ".norm" in name:
            w = (1.0 if name.endswith("weight") else 0.0) + rng.uniform(-0.1, 0.1, shape)
        else:
            fan_in = shape[-1] if len(shape) == 2 else cfg.H
            k = 1.0 / math.sqrt(fan_in)
            w = rng.uniform(-k, k, shape)
        weights[name] = w.astype(np.float32)
    return weights


def make_model_data(cfg: ModelConfig, seed: int = 1) -> tuple:
    """``(inputs, targets)`` of a model row. seq2seq: source tokens ``(B, T)`` and target
    tokens ``(B, T_out)``, int64 ids in ``3..vocab-1`` (0 pads, 1 and 2 are <bos> and <eos>);
    transformer: float32 ``(B, T, H)`` and class ids ``(B,)``."""
    rng = np.random.default_rng(seed)
    if cfg.kind == "seq2seq":
        src = rng.integers(3, cfg.vocab, size=(cfg.B, cfg.T)).astype(np.int64)
        tgt = rng.integers(3, cfg.vocab, size=(cfg.B, cfg.T_out)).astype(np.int64)
        return src, tgt
    x = rng.standard_normal((cfg.B, cfg.T, cfg.H)).astype(np.float32)
    return x, rng.integers(0, cfg.vocab, size=cfg.B).astype(np.int64)
