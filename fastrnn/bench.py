"""Side-by-side timing of fastrnn against PyTorch and ONNX Runtime, in one process.

Usage (``fastrnn bench`` and ``python benchmarks/compare.py`` take the same arguments)::

    python -m fastrnn.bench                      # full run (~10 minutes)
    python -m fastrnn.bench --quick              # smoke run for CI (well under 2 minutes)
    python -m fastrnn.bench --only F1,S1 --repeat 50 --json out.json
    python -m fastrnn.bench --list               # list the configurations
    python -m fastrnn.bench --isa all            # fastrnn on every instruction set this CPU runs
    python -m fastrnn.bench --load 1             # also time each row beside 1 busy process

Every contender runs the same layer with the same weights (generated here, loaded into each
through PyTorch-style ``state_dict`` names).  Before anything is timed, every contender's output
and final state are checked against an oracle (PyTorch when installed, else fastrnn's NumPy
reference); a disagreement beyond ~1e-4 (relative to the output's scale) or a crash makes the
script exit with status 1 after printing the table.  Timings never fail the run.

Timing: for each configuration, every contender is warmed up and calibrated so that one sample
(``number`` back-to-back calls) lasts a few milliseconds; then samples are taken round-robin over
the contenders (the order rotates each round), so that machine noise hits all of them alike.  The
table reports the median time per call.  The slow NumPy reference only takes a few samples, and
only where one call is cheap.

Contenders, each only when available:

- ``fastrnn``  fastrnn, ``backend="compiled"``, on the kernels in use (the best this CPU runs, or
               ``FASTRNN_ISA``'s, or the first of ``--isa``)
- ``fastrnn[avx2]`` ...  the same on the other instruction sets named by ``--isa``
- ``ref``      fastrnn, ``backend="reference"`` (the NumPy specification; few samples)
- ``torch``    ``torch.nn.LSTM/GRU/RNN(batch_first=True)`` under ``torch.inference_mode()``
- ``onnx``     the same PyTorch module exported with ``torch.onnx.export(..., dynamo=False)``, run
               by an ONNX Runtime ``InferenceSession`` with ``intra_op_num_threads`` = threads

Under load (``--load N``): after its normal samples, each row is timed twice more, alone and
while N other processes spin on the CPU, each sample after 0.15 s of untimed calls of the same
contender (the steady state of sustained work); the table then gives each contender's slowdown
factor, loaded time / unloaded time of those two passes, from the same run.

Exit status: 0 when every contender that ran gave the right numbers, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


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
        per = 2.0 * self.valid_steps() * GATES[self.kind] * self.H
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

# Training rows (issue 4): enabled automatically once fastrnn layers have a working backward
# (see ``fastrnn_can_train``), or forced with --training on (PyTorch only then).
TRAIN_CONFIGS = [
    Config("T1", "lstm", 32, 100, 32, 64, mode="train", small=True),
    Config("T2", "lstm", 64, 50, 128, 128, mode="train"),
    Config("T3", "lstm", 16, 150, 256, 256, mode="train"),
    Config("T4", "gru", 64, 50, 128, 128, mode="train"),
    Config("T5", "rnn", 64, 50, 128, 128, mode="train", nonlinearity="tanh"),
    Config("T6", "lstm", 32, 25, 512, 512, mode="train"),
    Config("P2", "lstm", 64, 100, 64, 128, mode="train_packed", lengths_range=(10, 100)),
]

ALL_CONFIGS = FORWARD_CONFIGS + PACKED_CONFIGS + STREAM_CONFIGS + ODD_CONFIGS + TRAIN_CONFIGS

PEERS = ["torch", "onnx"]

STREAM_CHECK_STEPS = 6
# The SGD update is executed (its cost is part of a training step) but kept tiny: with a real
# learning rate, hundreds of repetitions on one batch drifted the weights into saturation, and the
# cost of a step changed along the way (fastrnn's T5 went from 22 ms to 200 ms per step).
SGD_LR = 1e-9
# Under --load every sample follows this much untimed work of the same contender: a busy
# neighbour matters for sustained work (training, serving), whose steady state this is.
LOAD_WARM_S = 0.15


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def make_weights(cfg: Config, seed: int = 0) -> dict:
    """PyTorch-named float32 weights, uniform in +-1/sqrt(H) like PyTorch's default init."""
    rng = np.random.default_rng(seed)
    G, H, I = GATES[cfg.kind], cfg.H, cfg.I
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
# Contenders
# --------------------------------------------------------------------------------------------


class Unavailable(Exception):
    """A contender that does not exist (not installed, not implemented yet): shown as n/a."""


@dataclass
class Runner:
    """A prepared contender for one configuration.

    ``run`` is the timed call (all inputs prebuilt; streaming runners carry their state).
    ``check`` returns a dict of NumPy arrays compared against the oracle (outputs and final
    states, or gradients for training).  ``ctx`` wraps each timing sample (torch's
    inference_mode).  ``note`` is printed in the table's notes (e.g. "padded").
    """

    name: str
    run: Callable[[], object]
    check: Callable[[], dict]
    ctx: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    note: str = ""
    checked: bool = True  # compare against the oracle (False: computes something else)
    max_samples: Optional[int] = None
    samples: list = field(default_factory=list)
    number: int = 1
    check_time: Optional[float] = None  # duration of the check call (the warm-up)
    check_calls: int = 1  # how many ``run``-sized calls one check makes (streaming: several steps)


def _as_states(state) -> list:
    if state is None:
        return []
    if isinstance(state, (tuple, list)):
        return [np.asarray(s) for s in state]
    return [np.asarray(state)]


# ---------------------------------------------------------------------------- fastrnn


def fastrnn_layer(fastrnn, cfg: Config, backend: str, weights: dict):
    cls = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cfg.kind]
    if not hasattr(fastrnn, cls):
        raise Unavailable(f"fastrnn.{cls} missing")
    kwargs = dict(num_layers=1, bias=True, bidirectional=False, dtype="float32", seed=0, backend=backend)
    if cfg.kind == "rnn":
        kwargs["nonlinearity"] = cfg.nonlinearity
    try:
        layer = getattr(fastrnn, cls)(cfg.I, cfg.H, **kwargs)
    except (NotImplementedError, ImportError) as exc:
        raise Unavailable(f"{backend}: {type(exc).__name__}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        if "backend" in str(exc).lower() or "compiled" in str(exc).lower():
            raise Unavailable(f"{backend}: {exc}") from exc
        raise
    layer.load_state_dict({k: v.copy() for k, v in weights.items()})
    return layer


def fastrnn_runner(fastrnn, cfg: Config, backend: str, weights: dict, name: str,
                   isa: Optional[str] = None) -> Runner:
    """A fastrnn contender; with ``isa``, every call (and the check) runs on that instruction
    set's kernels."""
    runner = _fastrnn_runner(fastrnn, cfg, backend, weights, name)
    if isa is not None:
        runner.ctx = lambda: fastrnn._engine.use_isa(isa)
    return runner


def _fastrnn_runner(fastrnn, cfg: Config, backend: str, weights: dict, name: str) -> Runner:
    layer = fastrnn_layer(fastrnn, cfg, backend, weights)
    x = make_input(cfg)
    lengths = cfg.lengths()

    if cfg.mode in ("forward", "packed"):
        def run():
            return layer(x, lengths=lengths)

        def check():
            y, st = layer(x, lengths=lengths)
            return {"y": np.asarray(y), **{f"state{i}": s for i, s in enumerate(_as_states(st))}}

        return Runner(name, run, check)

    if cfg.mode == "stream":
        if not hasattr(layer, "step"):
            raise Unavailable("layer.step missing")
        holder = [None]

        def run():
            y, holder[0] = layer.step(x, holder[0])
            return y

        def check():
            st = None
            ys = []
            for xt in stream_inputs(cfg, STREAM_CHECK_STEPS):
                y, st = layer.step(xt, st)
                ys.append(np.asarray(y))
            return {"y": np.stack(ys), **{f"state{i}": s for i, s in enumerate(_as_states(st))}}

        return Runner(name, run, check, check_calls=STREAM_CHECK_STEPS)

    # training: forward(training=True) + backward(dy) + plain SGD on the live parameters.  No
    # gradient for x, as in PyTorch where x does not require one (its oneDNN backward computes
    # it anyway: same time with x.requires_grad, measured); fastrnn skips that GEMM.
    dy = np.broadcast_to(valid_mask(cfg), (cfg.B, cfg.T, cfg.H)).astype(np.float32)

    def fwd_bwd():
        layer(x, lengths=lengths, training=True)
        layer.backward(dy, input_grad=False)

    def run():
        fwd_bwd()
        grads = layer.grads
        for k, p in layer.parameters().items():  # the live arrays, updated in place
            p -= SGD_LR * grads[k]

    def check():
        layer.load_state_dict({k: v.copy() for k, v in weights.items()})
        fwd_bwd()
        return {f"grad_{k}": np.array(v) for k, v in layer.grads.items()}

    return Runner(name, run, check)


def fastrnn_backends() -> tuple:
    """Import fastrnn and probe its backends.  Returns (module or None, {backend: reason_na})."""
    na = {}
    try:
        import fastrnn  # noqa: F401
    except Exception as exc:  # not built / not written yet
        reason = f"import fastrnn failed: {type(exc).__name__}: {exc}"
        return None, {"compiled": reason, "reference": reason}
    probe = Config("probe", "lstm", 2, 3, 4, 5)
    w = make_weights(probe)
    for backend in ("compiled", "reference"):
        try:
            layer = fastrnn_layer(fastrnn, probe, backend, w)
            layer(make_input(probe))
        except Unavailable as exc:
            na[backend] = str(exc)
        except Exception as exc:
            na[backend] = f"{backend} probe failed: {type(exc).__name__}: {exc}"
    return fastrnn, na


def fastrnn_can_train(fastrnn, backend: str) -> tuple:
    """(ok, reason): does a tiny layer run forward(training=True) + backward?"""
    if fastrnn is None:
        return False, "fastrnn not importable"
    probe = Config("probe", "lstm", 2, 3, 4, 5, mode="train")
    try:
        layer = fastrnn_layer(fastrnn, probe, backend, make_weights(probe))
        if not hasattr(layer, "backward"):
            return False, "layer.backward missing"
        y, _ = layer(make_input(probe), training=True)
        layer.backward(np.ones_like(np.asarray(y)))
        if not layer.grads:
            return False, "layer.grads empty after backward"
        return True, ""
    except Exception as exc:
        return False, f"backward probe failed: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------- torch


def torch_module(torch, cfg: Config, weights: dict):
    nn = torch.nn
    if cfg.kind == "lstm":
        m = nn.LSTM(cfg.I, cfg.H, batch_first=True)
    elif cfg.kind == "gru":
        m = nn.GRU(cfg.I, cfg.H, batch_first=True)
    else:
        m = nn.RNN(cfg.I, cfg.H, batch_first=True, nonlinearity=cfg.nonlinearity)
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    return m


def torch_runner(torch, cfg: Config, weights: dict) -> Runner:
    m = torch_module(torch, cfg, weights)
    x = torch.from_numpy(make_input(cfg))
    lengths = cfg.lengths()
    pack = torch.nn.utils.rnn.pack_padded_sequence
    unpack = torch.nn.utils.rnn.pad_packed_sequence

    def states(st):
        st = st if isinstance(st, tuple) else (st,)
        return {f"state{i}": s.detach().numpy().copy() for i, s in enumerate(st)}

    if cfg.mode in ("forward", "packed", "train", "train_packed"):
        if lengths is None:
            def fwd():
                return m(x)
        else:
            lens_t = torch.from_numpy(lengths)

            def fwd():
                # pack, run, and unpack to a padded (B, T, H) output, as fastrnn returns it
                p = pack(x, lens_t, batch_first=True, enforce_sorted=False)
                out, st = m(p)
                y, _ = unpack(out, batch_first=True, total_length=cfg.T)
                return y, st

    if cfg.mode in ("forward", "packed"):
        m.eval()

        def check():
            with torch.inference_mode():
                y, st = fwd()
            return {"y": y.numpy().copy(), **states(st)}

        return Runner("torch", fwd, check, ctx=torch.inference_mode)

    if cfg.mode == "stream":
        m.eval()
        xt = x.reshape(1, 1, cfg.I)
        holder = [None]

        def run():
            y, holder[0] = m(xt, holder[0])
            return y

        def check():
            st = None
            ys = []
            with torch.inference_mode():
                for xs in stream_inputs(cfg, STREAM_CHECK_STEPS):
                    y, st = m(torch.from_numpy(xs).reshape(1, 1, cfg.I), st)
                    ys.append(y.numpy().reshape(1, cfg.H).copy())
            return {"y": np.stack(ys), **states(st)}

        return Runner("torch", run, check, ctx=torch.inference_mode, check_calls=STREAM_CHECK_STEPS)

    # training
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=SGD_LR)

    def run():
        opt.zero_grad(set_to_none=True)
        y, _ = fwd()
        y.sum().backward()
        opt.step()

    def check():
        m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
        opt.zero_grad(set_to_none=True)
        y, _ = fwd()
        y.sum().backward()
        return {f"grad_{k}": p.grad.numpy().copy() for k, p in m.named_parameters()}

    return Runner("torch", run, check)


# ---------------------------------------------------------------------------- ONNX Runtime


ONNX_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}  # from PyTorch's i,f,g,o / r,z,n


def onnx_lengths_model(cfg: Config, weights: dict) -> bytes:
    """A hand-built ONNX graph, one LSTM/GRU/RNN node with its ``sequence_lens`` input.

    ``torch.onnx.export`` cannot export a packed sequence, but the ONNX recurrent operators take
    per-sequence lengths with PyTorch's packed semantics (zeros past the end, final state at the
    last valid step).  Inputs ``x`` (B, T, I) and ``lens`` (B,) int32; outputs ``y`` (B, T, H)
    and the final state(s).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    B, T, I, H = cfg.B, cfg.T, cfg.I, cfg.H
    order = ONNX_GATE_ORDER[cfg.kind]

    def reorder(w):
        return np.concatenate([np.split(w, len(order), axis=0)[k] for k in order], axis=0)

    W = reorder(weights["weight_ih_l0"])[None]
    R = reorder(weights["weight_hh_l0"])[None]
    Bias = np.concatenate([reorder(weights["bias_ih_l0"]), reorder(weights["bias_hh_l0"])])[None]
    inits = [numpy_helper.from_array(np.ascontiguousarray(a, np.float32), n) for a, n in
             ((W, "W"), (R, "R"), (Bias, "B"))]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    op = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cfg.kind]
    attrs = {"hidden_size": H}
    if cfg.kind == "gru":
        attrs["linear_before_reset"] = 1
    if cfg.kind == "rnn":
        attrs["activations"] = ["Relu" if cfg.nonlinearity == "relu" else "Tanh"]
    states = ["hn", "cn"] if cfg.kind == "lstm" else ["hn"]
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tbi"], perm=[1, 0, 2]),
        helper.make_node(op, ["x_tbi", "W", "R", "B", "lens"], ["Y"] + states, **attrs),
        helper.make_node("Squeeze", ["Y", "axis1"], ["Y_tbh"]),
        helper.make_node("Transpose", ["Y_tbh"], ["y"], perm=[1, 0, 2]),
    ]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, f"{cfg.kind}_lengths",
        [helper.make_tensor_value_info("x", f32, [B, T, I]),
         helper.make_tensor_value_info("lens", TensorProto.INT32, [B])],
        [helper.make_tensor_value_info("y", f32, [B, T, H])]
        + [helper.make_tensor_value_info(n, f32, [1, B, H]) for n in states],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_runner(torch, ort, cfg: Config, weights: dict, tmpdir: str, threads: Optional[int]) -> Runner:
    if cfg.mode.startswith("train"):
        raise Unavailable("inference only")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # Stop the intra-op threads' idle spinning when a Run returns.  Without it, ORT's worker keeps
    # a core busy after each call and, on a 2-core machine, starves the OpenMP workers of the next
    # contender (PyTorch ran 30-100x slower right after an ORT call).  It does not slow ORT itself.
    so.add_session_config_entry("session.force_spinning_stop", "1")

    if cfg.mode == "packed":
        sess = ort.InferenceSession(onnx_lengths_model(cfg, weights), so, providers=["CPUExecutionProvider"])
        feed = {"x": make_input(cfg), "lens": cfg.lengths().astype(np.int32)}

        def run():
            return sess.run(None, feed)

        def check():
            out = sess.run(None, feed)
            return {"y": out[0], **{f"state{i}": s for i, s in enumerate(out[1:])}}

        return Runner("onnx", run, check, note="hand-built ONNX graph: one recurrent node with sequence_lens")

    if torch is None:
        raise Unavailable("needs torch for the export")
    m = torch_module(torch, cfg, weights).eval()
    is_lstm = cfg.kind == "lstm"
    stream = cfg.mode == "stream"

    class Wrap(torch.nn.Module):
        def __init__(self, mod):
            super().__init__()
            self.mod = mod

        def forward(self, x, *state):
            if state:
                st = (state[0], state[1]) if is_lstm else state[0]
                y, st = self.mod(x, st)
            else:
                y, st = self.mod(x)
            st = st if isinstance(st, tuple) else (st,)
            return (y,) + tuple(st)

    n_state = 2 if is_lstm else 1
    state_names = ["h0", "c0"][:n_state]
    out_names = ["y"] + ["hn", "cn"][:n_state]
    if stream:
        x0 = torch.zeros(1, 1, cfg.I)
        zeros = [torch.zeros(1, 1, cfg.H) for _ in range(n_state)]
        args, in_names = (x0, *zeros), ["x"] + state_names
    else:
        args, in_names = (torch.from_numpy(make_input(cfg)),), ["x"]
    path = os.path.join(tmpdir, f"{cfg.name}.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(m), args, path, dynamo=False, input_names=in_names, output_names=out_names)
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    if not stream:
        feed = {"x": make_input(cfg)}

        def run():
            return sess.run(None, feed)

        def check():
            out = sess.run(None, feed)
            return {"y": out[0], **{f"state{i}": s for i, s in enumerate(out[1:])}}

        return Runner("onnx", run, check)

    feed = {"x": make_input(cfg).reshape(1, 1, cfg.I)}
    for nm in state_names:
        feed[nm] = np.zeros((1, 1, cfg.H), np.float32)

    def run():
        out = sess.run(None, feed)
        for nm, s in zip(state_names, out[1:]):
            feed[nm] = s
        return out[0]

    def check():
        f = {nm: np.zeros((1, 1, cfg.H), np.float32) for nm in state_names}
        ys = []
        for xs in stream_inputs(cfg, STREAM_CHECK_STEPS):
            f["x"] = xs.reshape(1, 1, cfg.I)
            out = sess.run(None, f)
            ys.append(out[0].reshape(1, cfg.H))
            for nm, s in zip(state_names, out[1:]):
                f[nm] = s
        return {"y": np.stack(ys), **{f"state{i}": f[nm] for i, nm in enumerate(state_names)}}

    return Runner("onnx", run, check, check_calls=STREAM_CHECK_STEPS)


# --------------------------------------------------------------------------------------------
# Checking and timing
# --------------------------------------------------------------------------------------------


def compare_outputs(got: dict, want: dict, tol: float = 1e-4) -> Optional[str]:
    """None if ``got`` matches ``want`` to ``tol`` (relative to each array's scale), else why."""
    problems = []
    for k, w in want.items():
        if k not in got:
            problems.append(f"{k} missing")
            continue
        g = np.asarray(got[k], dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        if g.size == w.size and g.shape != w.shape:
            g = g.reshape(w.shape)
        if g.shape != w.shape:
            problems.append(f"{k} shape {g.shape} != {w.shape}")
            continue
        if not np.all(np.isfinite(g)):
            problems.append(f"{k} has non-finite values")
            continue
        scale = max(1.0, float(np.max(np.abs(w))) if w.size else 1.0)
        err = float(np.max(np.abs(g - w))) if w.size else 0.0
        if err > tol * scale:
            problems.append(f"{k} max abs err {err:.3g} > {tol * scale:.3g}")
    return "; ".join(problems) or None


def _sample(r: Runner, rewarm: bool = False, warm_s: float = 0.0) -> float:
    with r.ctx():
        if rewarm:
            r.run()   # untimed: wakes the contender's threads and caches after a pause
        t_warm = time.perf_counter()
        while time.perf_counter() - t_warm < warm_s:
            r.run()   # untimed: the contender in its steady state (--load)
        t0 = time.perf_counter()
        for _ in range(r.number):
            r.run()
        t1 = time.perf_counter()
    return (t1 - t0) / r.number


def _calibrate(r: Runner, target_sample_s: float) -> float:
    """Set ``r.number`` (like timeit's autorange) so that one sample lasts the target; returns
    the duration of one sample."""
    r.number = 1
    if r.check_time is not None and r.check_time / r.check_calls >= target_sample_s:
        return r.check_time / r.check_calls  # a slow call: one call per sample
    while True:
        t = _sample(r) * r.number
        if t >= target_sample_s or r.number >= 100000:
            return t
        r.number = min(100000, max(r.number * 2, int(r.number * target_sample_s / max(t, 1e-9) * 0.5)))


def time_runners(runners: list, budget_s: float, min_reps: int, max_reps: int,
                 target_sample_s: float, repeat: Optional[int], gap_s: float = 0.0,
                 warm_s: float = 0.0) -> None:
    """Calibrate, then take samples round-robin; fills ``runner.samples``.

    Every runner has been warmed up by its correctness check.  The number of rounds fits the
    ``budget_s`` (at least ``min_reps`` when that costs at most twice the budget, else fewer, at
    least one), unless ``repeat`` fixes it; ``repeat=0`` takes the check call as the only sample.
    ``gap_s``: a pause before each sample, so that the previous contender's idle threads (OpenMP
    and OpenBLAS workers spin-wait for a while after their work) stop competing for the cores;
    after it, one untimed call before the timed ones (a call right after a pause is 2-3x slower
    on these VMs, for every contender: that measured the wake-up, not the steady state).
    ``warm_s``: before each sample, untimed calls for that long (the steady state of sustained
    work, used under ``--load``).
    """
    if repeat == 0:
        for r in runners:
            r.number = 1
            r.samples.append(r.check_time / r.check_calls)
        return
    main = [r for r in runners if r.max_samples is None]
    capped = [r for r in runners if r.max_samples is not None]
    # time per round of the contenders that sample every round (the capped reference aside)
    per_round = sum(_calibrate(r, target_sample_s) + gap_s + warm_s for r in main)
    if repeat:
        reps = repeat
    else:
        per_round = per_round or 1e-6
        if min_reps * per_round <= 2 * budget_s:
            lo = min_reps
        else:  # slow calls: a median of 3 when that stays within 4 budgets, else a single round
            lo = min(min_reps, 3) if 3 * per_round <= 4 * budget_s else 1
        reps = int(max(lo, min(max_reps, budget_s / per_round)))
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(reps if main else 0):
            k = i % len(main)
            for r in main[k:] + main[:k]:
                if gap_s:
                    time.sleep(gap_s)
                r.samples.append(_sample(r, rewarm=bool(gap_s), warm_s=warm_s))
        # The capped (reference) contenders after the others: NumPy's OpenBLAS threads spin for a
        # while after each matmul and would slow down whoever ran next.
        for r in capped:
            _calibrate(r, target_sample_s)
            for _ in range(min(reps, r.max_samples)):
                r.samples.append(_sample(r))
    finally:
        if gc_was:
            gc.enable()


# --------------------------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        from fastrnn._engine import cpu_model
    except ImportError:  # the comparison runs without the compiled engine too
        return platform.processor() or platform.machine()
    return cpu_model()


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ",".join(x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if x in flags)
    except OSError:
        pass
    return ""


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def measure_sgemm(n: int, reps: int) -> float:
    """Best-of-``reps`` NumPy float32 n^3 matmul rate in GFLOP/s (the machine's GEMM ceiling)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def measure_engine_gemm(fastrnn, n: int, reps: int, isa: Optional[str] = None) -> Optional[float]:
    """Best-of-``reps`` rate of fastrnn's own float32 n^3 GEMM kernel in GFLOP/s, or None.

    NumPy's sgemm is no ceiling where OpenBLAS runs kernels below the machine's vector width
    (``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine: half the FMA rate); the engine's kernel
    is what fastrnn's own GEMMs run at.
    """
    engine = getattr(fastrnn, "_engine", None)
    matmul = getattr(engine, "matmul", None)
    if matmul is None:
        return None
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    with engine.use_isa(isa) if isa else contextlib.nullcontext():
        matmul(a, b)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            matmul(a, b)
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def fastrnn_isas(fastrnn, wanted: Optional[str]) -> list:
    """The instruction sets to run fastrnn on (``--isa``): the first is the 'fastrnn' column."""
    engine = getattr(fastrnn, "_engine", None)
    if engine is None or not hasattr(engine, "supported_isas"):
        return []
    runnable = engine.supported_isas()
    if not wanted:
        return [engine.isa()]
    if wanted == "all":
        return [engine.isa()] + [i for i in runnable if i != engine.isa()]
    isas = list(dict.fromkeys(s.strip() for s in wanted.split(",") if s.strip()))
    bad = [i for i in isas if i not in runnable]
    if bad:
        raise SystemExit(f"--isa: this CPU cannot run {', '.join(bad)} (it runs: {', '.join(runnable)})")
    return isas


def fastrnn_name(isas: list, isa: str) -> str:
    """Contender name of fastrnn on ``isa``: 'fastrnn' for the first of ``isas``."""
    return "fastrnn" if not isas or isa == isas[0] else f"fastrnn[{isa}]"


@contextlib.contextmanager
def busy_processes(n: int):
    """``n`` processes spinning on the CPU for the duration of the block (``--load``)."""
    import subprocess
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)   # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def fmt_time(sec: Optional[float], stream: bool) -> str:
    if sec is None:
        return "n/a"
    if stream:
        return f"{sec * 1e6:.2f}us"
    if sec < 1e-3:
        return f"{sec * 1e3:.4f}ms"
    if sec < 1.0:
        return f"{sec * 1e3:.3f}ms"
    return f"{sec:.3f}s"


def fmt_ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def select_configs(args) -> list:
    configs = FORWARD_CONFIGS + PACKED_CONFIGS + STREAM_CONFIGS + ODD_CONFIGS
    if args.training in ("auto", "on"):
        configs = configs + TRAIN_CONFIGS
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        by_name = {c.name.lower(): c for c in ALL_CONFIGS}
        unknown = [w for w in wanted if w.lower() not in by_name]
        if unknown:
            raise SystemExit(f"--only: unknown config(s) {unknown}; known: {[c.name for c in ALL_CONFIGS]}")
        configs = [by_name[w.lower()] for w in wanted]
        # P1's padded twin is needed for the P1/padded ratio
        if any(c.name == "P1" for c in configs) and not any(c.name == "P1pad" for c in configs):
            configs.append(by_name["p1pad"])
    return configs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repetitions, small sgemm: a smoke run for CI")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--only", metavar="NAMES", help="comma-separated config names, e.g. F1,S1,N127")
    ap.add_argument("--repeat", type=int, metavar="N", help="samples per contender (default: adaptive)")
    ap.add_argument("--skip", default="", metavar="NAMES", help="contenders to leave out: fastrnn,ref,torch,onnx")
    ap.add_argument("--threads", type=int, help="threads for every contender (default: each one's default)")
    ap.add_argument("--training", choices=["auto", "on", "off"], default="auto",
                    help="training rows: auto = when fastrnn has a working backward; on = also torch-only")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="statistic of the samples shown in the table (the JSON has both)")
    ap.add_argument("--gap", type=float, default=None, metavar="SECONDS",
                    help="pause before each sample so the previous contender's spinning threads go idle "
                         "(default 0.05, 0.01 with --quick; 0 disables)")
    ap.add_argument("--isa", metavar="NAMES",
                    help="instruction sets to run fastrnn on: comma-separated (the first is the "
                         "'fastrnn' column), or 'all' that this CPU can run (default: the one in use)")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="also time every row beside N busy processes and report the slowdowns")
    ap.add_argument("--list", action="store_true", help="list the configurations and exit")
    args = ap.parse_args(argv)

    if args.list:
        for c in ALL_CONFIGS:
            print(f"{c.name:6s} {c.describe()}")
        return 0

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.gap is None:
        args.gap = 0.01 if args.quick else 0.05
    if args.quick:
        budget, min_reps, max_reps, target = 1.0, 3, 15, 0.002
        sgemm_n, sgemm_reps, ref_samples, ref_max_call = 1024, 5, 2, 0.05
        quick_deadline = 60.0
    else:
        budget, min_reps, max_reps, target = 12.0, 7, 400, 0.005
        sgemm_n, sgemm_reps, ref_samples, ref_max_call = 2048, 7, 5, 5.0
        quick_deadline = None

    t_start = time.perf_counter()
    # Measure the GEMM ceiling first, before any other library starts its thread pools.
    sgemm = measure_sgemm(sgemm_n, sgemm_reps)
    time.sleep(0.2)

    fastrnn, fr_na = fastrnn_backends()
    isas = fastrnn_isas(fastrnn, args.isa) if fastrnn is not None else []
    engine_gemm_by_isa = {i: measure_engine_gemm(fastrnn, sgemm_n, sgemm_reps, i) for i in isas}
    engine_gemm = (engine_gemm_by_isa.get(isas[0]) if isas
                   else measure_engine_gemm(fastrnn, sgemm_n, sgemm_reps))
    time.sleep(0.2)
    torch = ort = None
    na_global = {}
    if "torch" not in skip or "onnx" not in skip:
        try:
            import torch  # noqa: F811
        except ImportError as exc:
            na_global["torch"] = na_global["onnx"] = f"torch not installed ({exc})"
    if "onnx" not in skip and torch is not None:
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it)
            import onnxruntime as ort  # noqa: F811
        except ImportError as exc:
            na_global["onnx"] = f"onnx/onnxruntime not installed ({exc})"
    if torch is None and "torch" in skip:
        na_global["onnx"] = "needs torch for the export"

    fr_set_threads = fr_get_threads = None
    if fastrnn is not None:
        for mod in (fastrnn, getattr(fastrnn, "_engine", None)):
            if mod is not None and hasattr(mod, "set_num_threads"):
                fr_set_threads, fr_get_threads = mod.set_num_threads, getattr(mod, "get_num_threads", None)
                break
    if args.threads:
        if torch is not None:
            torch.set_num_threads(args.threads)
        if fr_set_threads is not None:
            fr_set_threads(args.threads)
    fr_threads = fr_get_threads() if fr_get_threads is not None else None
    torch_threads = torch.get_num_threads() if torch is not None else None

    configs = select_configs(args)
    train_skipped = None
    can_train, train_reason = fastrnn_can_train(fastrnn, "compiled" if "compiled" not in fr_na else "reference")
    if args.training == "auto" and not can_train:
        dropped = [c.name for c in configs if c.mode.startswith("train")]
        configs = [c for c in configs if not c.mode.startswith("train")]
        if dropped:
            train_skipped = f"training rows {','.join(dropped)} skipped: {train_reason}"

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    if fastrnn is not None:
        versions["fastrnn"] = getattr(fastrnn, "__version__", "?")
    if torch is not None:
        versions["torch"] = torch.__version__
    if ort is not None:
        versions["onnxruntime"] = ort.__version__

    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "sgemm_n": sgemm_n,
        "sgemm_gflops": sgemm,
        "engine_gemm_gflops": engine_gemm,
        "engine_gemm_gflops_by_isa": engine_gemm_by_isa,
        "engine": (fastrnn._engine.config() if fastrnn is not None
                   and hasattr(getattr(fastrnn, "_engine", None), "config") else None),
        "isas": isas,
        "load_processes": args.load,
        "threads": {"requested": args.threads, "torch": torch_threads, "fastrnn": fr_threads,
                    "onnxruntime_intra_op": args.threads or os.cpu_count()},
        "versions": versions,
        "quick": args.quick,
        "loadavg_start": loadavg(),
        "unavailable": {**{f"fastrnn[{k}]": v for k, v in fr_na.items()}, **na_global},
    }

    print(f"# fastrnn comparison  {meta['date']}")
    print(f"# machine: {meta['cpu']} ({meta['cpu_flags']}), {meta['cores']} cores; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if meta["engine"]:
        e = meta["engine"]
        print(f"# fastrnn engine: kernels {e['isa']}{' (forced by FASTRNN_ISA)' if e['isa_forced'] else ''}"
              f", compiled: {', '.join(e['compiled_isas'])}; this CPU runs: {', '.join(e['supported_isas'])}"
              f"; register tile {e['register_tile']}; timed here on: {', '.join(isas)}")
    print(f"# sgemm (NumPy float32 {sgemm_n}^3, best of {sgemm_reps}) at start: {sgemm:.1f} GFLOP/s"
          + (f"; fastrnn's own GEMM kernel: " + ", ".join(f"{g:.1f} ({i})" for i, g in engine_gemm_by_isa.items() if g)
             + " GFLOP/s" if any(engine_gemm_by_isa.values()) else
             (f"; fastrnn's own GEMM kernel: {engine_gemm:.1f} GFLOP/s" if engine_gemm else "")))
    if args.load:
        print(f"# under load: every row is timed again beside {args.load} busy process(es)")
    print(f"# threads: torch {torch_threads}, onnxruntime intra_op {meta['threads']['onnxruntime_intra_op']}, "
          f"fastrnn {fr_threads if fr_threads is not None else 'default'}")
    busy = float(meta["loadavg_start"].split()[0]) if meta["loadavg_start"] != "?" else 0.0
    print(f"# load average at start: {meta['loadavg_start']}"
          + (f"  WARNING: above the {os.cpu_count()} cores, another process is busy: timings are noisy"
             if busy > (os.cpu_count() or 1) else ""))
    for k, v in meta["unavailable"].items():
        print(f"# n/a {k}: {v}")
    if train_skipped:
        print(f"# {train_skipped}")
    sys.stdout.flush()

    rows = []
    failures = []
    notes = []
    tmp = tempfile.TemporaryDirectory(prefix="fastrnn-bench-")

    sgemm_samples = [sgemm]
    print(f"# running {len(configs)} configurations; the table follows at the end", file=sys.stderr)
    for cfg in configs:
        stream = cfg.mode == "stream"
        t_cfg = time.perf_counter()
        # keep sampling the GEMM ceiling: on a shared machine any one moment may be a noisy one
        sgemm_samples.append(measure_sgemm(sgemm_n, 1))
        time.sleep(0.2)  # let OpenBLAS's worker threads stop spinning before anything is timed
        weights = make_weights(cfg)
        runners: list = []
        na: dict = {}

        def add(name, factory):
            if name in skip:
                na[name] = "skipped"
                return
            if name in na_global:
                na[name] = na_global[name]
                return
            try:
                runners.append(factory())
            except Unavailable as exc:
                na[name] = str(exc)
            except NotImplementedError as exc:
                na[name] = f"NotImplementedError: {exc}"
            except Exception as exc:
                na[name] = f"CRASH while preparing: {type(exc).__name__}: {exc}"
                failures.append(f"{cfg.name}/{name}: crashed while preparing: {type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)

        for name, backend in (("fastrnn", "compiled"), ("ref", "reference")):
            if fastrnn is None or backend in fr_na:
                na[name] = fr_na.get(backend, "fastrnn not importable")
                continue
            if cfg.mode.startswith("train") and not can_train:
                na[name] = train_reason
                continue
            if name == "ref" and not cfg.small:
                na[name] = "too slow here (the reference runs on the small configurations only)"
                continue
            if name == "fastrnn" and isas:
                for isa in isas:
                    nm = fastrnn_name(isas, isa)
                    add(nm, lambda b=backend, n=nm, i=isa: fastrnn_runner(fastrnn, cfg, b, weights, n, i))
            else:
                add(name, lambda b=backend, n=name: fastrnn_runner(fastrnn, cfg, b, weights, n))
        if torch is not None:
            add("torch", lambda: torch_runner(torch, cfg, weights))
        if ort is not None:
            add("onnx", lambda: onnx_runner(torch, ort, cfg, weights, tmp.name, args.threads))

        # ---- correctness first: every contender against one oracle
        oracle_name = next((r.name for r in runners if r.name == "torch"), None) or \
            next((r.name for r in runners if r.name == "ref"), None)
        results = {}
        for r in list(runners):
            try:
                t0 = time.perf_counter()
                with r.ctx():
                    results[r.name] = r.check()
                r.check_time = time.perf_counter() - t0
            except NotImplementedError as exc:
                na[r.name] = f"NotImplementedError: {exc}"
                runners.remove(r)
            except Exception as exc:
                na[r.name] = f"CRASH: {type(exc).__name__}: {exc}"
                failures.append(f"{cfg.name}/{r.name}: crashed: {type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
                runners.remove(r)
        if oracle_name in results:
            for r in list(runners):
                if r.name == oracle_name or not r.checked:
                    continue
                why = compare_outputs(results[r.name], results[oracle_name])
                if why:
                    failures.append(f"{cfg.name}/{r.name} disagrees with {oracle_name}: {why}")
                    na[r.name] = f"WRONG vs {oracle_name}"
                    runners.remove(r)

        if any(r.name == "ref" for r in runners):
            time.sleep(0.2)  # the reference's matmuls leave OpenBLAS workers spinning for a while
        # ---- the slow NumPy reference: few samples, and only where one call is cheap
        for r in list(runners):
            if r.name != "ref":
                continue
            dt = r.check_time / r.check_calls
            if dt > ref_max_call:
                runners.remove(r)
                na["ref"] = f"skipped (one call {dt:.2f}s)"
            else:
                r.max_samples = ref_samples if not args.repeat else min(args.repeat, ref_samples)

        # ---- timing (in --quick, past the deadline: one sample each, to finish in CI's time)
        late = args.quick and time.perf_counter() - t_start > quick_deadline
        try:
            time_runners(runners, budget, min_reps, max_reps, target, 0 if late else args.repeat, args.gap)
        except Exception as exc:
            failures.append(f"{cfg.name}: crashed while timing: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)

        stat = statistics.median if args.stat == "median" else min
        med = {r.name: (stat(r.samples) if r.samples else None) for r in runners}
        loaded, steady = {}, {}
        if args.load and not late and runners:
            # the same contenders in their steady state, alone and beside busy processes: the
            # slowdown of each (both passes sample alike)
            kept = {r.name: r.samples for r in runners}
            try:
                for busy, into in ((0, steady), (args.load, loaded)):
                    for r in runners:
                        r.samples = []
                    with busy_processes(busy):
                        time_runners(runners, budget, min_reps, max_reps, target, args.repeat,
                                     args.gap, warm_s=LOAD_WARM_S)
                    into.update({r.name: (stat(r.samples) if r.samples else None) for r in runners})
            except Exception as exc:
                failures.append(f"{cfg.name}: crashed while timing under load: {type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
            for r in runners:
                r.samples = kept[r.name]
        for r in runners:
            if r.note:
                notes.append(f"{cfg.name} {r.name}: {r.note}")
        fr = med.get("fastrnn")
        peers = {p: med.get(p) for p in PEERS}
        ratios = {p: (t / fr if (t and fr) else None) for p, t in peers.items()}
        valid_peers = [t for t in peers.values() if t]
        best = min(valid_peers) if valid_peers else None
        best_ratio = best / fr if (best and fr) else None
        fr_names = [fastrnn_name(isas, i) for i in isas] or ["fastrnn"]
        gflops = cfg.flops() / fr / 1e9 if fr else None
        row = {
            "config": cfg.name,
            "desc": cfg.describe(),
            "mode": cfg.mode,
            "flops": cfg.flops(),
            "time_s": med,
            "stat": args.stat,
            "median_s": {r.name: (statistics.median(r.samples) if r.samples else None) for r in runners},
            "min_s": {r.name: (min(r.samples) if r.samples else None) for r in runners},
            "samples": {r.name: len(r.samples) for r in runners},
            "number": {r.name: r.number for r in runners},
            "ratio_peer_over_fastrnn": ratios,
            "best_peer_over_fastrnn": best_ratio,
            "fastrnn_gflops": gflops,
            "best_peer_over": {n: (best / med[n] if (best and med.get(n)) else None) for n in fr_names},
            "gflops": {n: (cfg.flops() / med[n] / 1e9 if med.get(n) else None) for n in fr_names},
            "steady_s": steady,
            "loaded_s": loaded,
            "slowdown": {n: (loaded[n] / steady[n] if (loaded.get(n) and steady.get(n)) else None)
                         for n in loaded},
            "fastrnn_sgemm_fraction": None,  # filled in at the end, against the best sgemm seen
            "na": na,
            "oracle": oracle_name,
            "single_sample": bool(late),
            "notes": [r.note for r in runners if r.note],
        }
        rows.append(row)
        print(f"#   {cfg.name:6s} {time.perf_counter() - t_cfg:6.1f}s  "
              + "  ".join(f"{k} {fmt_time(v, stream)}" for k, v in med.items()), file=sys.stderr)

    tmp.cleanup()

    # The GEMM ceiling: the best rate seen (start, before each configuration, end).
    sgemm_samples.append(measure_sgemm(sgemm_n, sgemm_reps))
    ceiling = max(sgemm_samples + ([engine_gemm] if engine_gemm else []))
    meta["sgemm_gflops_end"] = sgemm_samples[-1]
    meta["sgemm_gflops_samples"] = sgemm_samples
    meta["sgemm_gflops_ceiling"] = ceiling
    for i, row in enumerate(rows):
        if row["fastrnn_gflops"]:
            row["fastrnn_sgemm_fraction"] = row["fastrnn_gflops"] / ceiling
        print(format_row(row, row["mode"] == "stream", header=(i == 0), isas=isas))

    # ---- P1 vs its padded twin
    by = {r["config"]: r for r in rows}
    if "P1" in by and "P1pad" in by:
        for who in ("fastrnn", "ref", "torch", "onnx"):
            a, b = by["P1"]["time_s"].get(who), by["P1pad"]["time_s"].get(who)
            if a and b:
                notes.append(f"P1/P1pad time ratio for {who}: {a / b:.2f} "
                             f"(valid steps are {by['P1']['flops'] / by['P1pad']['flops']:.2f} of padded)")
    odd = [(c, by[c]["fastrnn_gflops"]) for c in ("N127", "N128", "N129", "N255", "N256", "N257")
           if c in by and by[c]["fastrnn_gflops"]]
    if odd:
        notes.append("fastrnn GFLOP/s next to powers of two: " + ", ".join(f"{c} {g:.1f}" for c, g in odd))
    print()
    print(f"# times: {args.stat} per call (streaming: per step); ratios are peer time / fastrnn time"
          " (>1: fastrnn faster); best = the faster peer")
    if args.load:
        print()
        print(format_slowdowns(rows, args.load))
    print(f"# GFLOP/s counts 2*steps*G*H*(I+H) (training: 2*steps*G*H*(2I+3H), no input gradient); %gemm = fraction of {ceiling:.0f} GFLOP/s, the best "
          f"GEMM rate seen (NumPy sgemm, {len(sgemm_samples)} measurements: start {sgemm:.0f}, median "
          f"{statistics.median(sgemm_samples):.0f}, end {sgemm_samples[-1]:.0f}"
          + (f"; fastrnn's own kernel {engine_gemm:.0f}" if engine_gemm else "") + ")")
    print("# torch packed rows: pack_padded_sequence(enforce_sorted=False) + module + pad_packed_sequence")
    for n in dict.fromkeys(notes):
        print(f"# note {n}")
    na_lines = {}
    for r in rows:
        for who, why in r["na"].items():
            if who in skip:
                continue
            na_lines.setdefault((who, why), []).append(r["config"])
    for (who, why), names in na_lines.items():
        if why in meta["unavailable"].values():
            continue  # already printed in the header
        print(f"# n/a {who} on {','.join(names)}: {why}")
    elapsed = time.perf_counter() - t_start
    meta["loadavg_end"] = loadavg()
    late_rows = [r["config"] for r in rows if r["single_sample"]]
    if late_rows:
        print(f"# --quick ran past {quick_deadline:.0f}s: {','.join(late_rows)} timed by the check call alone")
    print(f"# total time {elapsed:.1f}s; load average at end: {meta['loadavg_end']}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "failures": failures, "notes": notes,
                       "elapsed_s": elapsed}, f, indent=2, default=str)
        print(f"# wrote {args.json}")

    if failures:
        print("\nFAILURES (wrong numbers or crashes):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0


COLS = ("fastrnn", "ref", "torch", "onnx")


def format_row(row: dict, stream: bool, header: bool, isas: tuple = ()) -> str:
    """One line of the table (and the header before the first); with several instruction sets,
    a time and a best-peer ratio per extra set after the usual columns."""
    extra = [fastrnn_name(list(isas), i) for i in isas[1:]]
    cols = COLS[:1] + tuple(extra) + COLS[1:]
    lines = []
    if header:
        h = (f"{'config':6s} {'description':44s} " + " ".join(f"{c:>15s}" if c in extra else f"{c:>11s}" for c in cols)
             + f" {'torch/fr':>8s} {'onnx/fr':>8s} {'best/fr':>8s} {'GFLOP/s':>8s} {'%gemm':>6s}"
             + "".join(f" {'best/' + c[8:-1]:>11s}" for c in extra))
        lines.append(h)
        lines.append("-" * len(h))
    med = row["time_s"]
    cells = []
    for c in cols:
        if c in med and med[c] is not None:
            cells.append(fmt_time(med[c], stream))
        else:
            why = row["na"].get(c, "n/a")
            cells.append("WRONG" if why.startswith("WRONG") else ("CRASH" if why.startswith("CRASH") else "n/a"))
    onnx_note = "*" if row["notes"] and med.get("onnx") else ""
    r = row["ratio_peer_over_fastrnn"]
    g = row["fastrnn_gflops"]
    frac = row["fastrnn_sgemm_fraction"]
    over = row.get("best_peer_over", {})
    lines.append(
        f"{row['config']:6s} {row['desc'][:44]:44s} "
        + " ".join((f"{cell:>15s}" if c in extra else f"{cell + (onnx_note if c == 'onnx' else ''):>11s}")
                   for c, cell in zip(cols, cells))
        + f" {fmt_ratio(r.get('torch')):>8s} {fmt_ratio(r.get('onnx')):>8s} {fmt_ratio(row['best_peer_over_fastrnn']):>8s}"
        + f" {('%.1f' % g) if g else '-':>8s} {('%.0f%%' % (100 * frac)) if frac else '-':>6s}"
        + "".join(f" {fmt_ratio(over.get(c)):>11s}" for c in extra)
    )
    return "\n".join(lines)


def format_slowdowns(rows: list, n: int) -> str:
    """The table of slowdown factors under load (``--load``): loaded time / unloaded time."""
    who = []
    for row in rows:
        for k in row.get("slowdown", {}):
            if k not in who:
                who.append(k)
    h = (f"# slowdown beside {n} busy process(es): loaded / unloaded median, both sampled after "
         f"{LOAD_WARM_S:g} s of untimed calls\n{'config':6s} ") + \
        " ".join(f"{k:>15s}" for k in who)
    lines = [h, "-" * len(h.splitlines()[-1])]
    for row in rows:
        s = row.get("slowdown", {})
        if s:
            lines.append(f"{row['config']:6s} " + " ".join(f"{fmt_ratio(s.get(k)):>15s}" for k in who))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
