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
