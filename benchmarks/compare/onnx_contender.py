"""ONNX Runtime as a contender: the PyTorch module exported with ``torch.onnx.export(...,
dynamo=False)``, or for packed rows a hand-built graph with ``sequence_lens``."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Optional

import numpy as np

from .configs import Config, make_input, stream_inputs
from .contenders import STREAM_CHECK_STEPS, Runner, Unavailable, outputs, torch_module

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


def _session_options(ort, threads: Optional[int]):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # Stop the intra-op threads' idle spinning when a Run returns.  Without it, ORT's worker keeps
    # a core busy after each call and, on a 2-core machine, starves the OpenMP workers of the next
    # contender (PyTorch ran 30-100x slower right after an ORT call).  It does not slow ORT itself.
    so.add_session_config_entry("session.force_spinning_stop", "1")
    return so


def onnx_runner(torch, ort, cfg: Config, weights: dict, tmpdir: str, threads: Optional[int]) -> Runner:
    if cfg.mode.startswith("train"):
        raise Unavailable("inference only")
    so = _session_options(ort, threads)
    if cfg.mode == "packed":
        sess = ort.InferenceSession(onnx_lengths_model(cfg, weights), so, providers=["CPUExecutionProvider"])
        return _batch_runner(sess, {"x": make_input(cfg), "lens": cfg.lengths().astype(np.int32)},
                             note="hand-built ONNX graph: one recurrent node with sequence_lens")
    if torch is None:
        raise Unavailable("needs torch for the export")
    n_state = 2 if cfg.kind == "lstm" else 1
    path = _export(torch, cfg, weights, os.path.join(tmpdir, f"{cfg.name}.onnx"), n_state)
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    if cfg.mode != "stream":
        return _batch_runner(sess, {"x": make_input(cfg)})
    return _stream_runner(sess, cfg, ["h0", "c0"][:n_state])


def _export(torch, cfg: Config, weights: dict, path: str, n_state: int) -> str:
    """Export the PyTorch module to ``path``: input x (and, streaming, h0/c0), outputs y and the
    final state(s)."""
    m = torch_module(torch, cfg, weights).eval()
    is_lstm = n_state == 2

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

    out_names = ["y"] + ["hn", "cn"][:n_state]
    if cfg.mode == "stream":
        zeros = [torch.zeros(1, 1, cfg.H) for _ in range(n_state)]
        args, in_names = (torch.zeros(1, 1, cfg.I), *zeros), ["x"] + ["h0", "c0"][:n_state]
    else:
        args, in_names = (torch.from_numpy(make_input(cfg)),), ["x"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(m), args, path, dynamo=False, input_names=in_names, output_names=out_names)
    return path


def _batch_runner(sess, feed: dict, note: str = "") -> Runner:
    def run():
        return sess.run(None, feed)

    def check():
        out = sess.run(None, feed)
        return outputs(out[0], out[1:])

    return Runner("onnx", run, check, note=note)


def _stream_runner(sess, cfg: Config, state_names: list) -> Runner:
    """One step per call on the exported T=1 graph, the state fed back as h0/c0."""
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
        return outputs(np.stack(ys), [f[nm] for nm in state_names])

    return Runner("onnx", run, check, check_calls=STREAM_CHECK_STEPS)
