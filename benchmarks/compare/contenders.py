"""The contenders of a row, each prepared with the row's weights and inputs: fastrnn (compiled, on
one or several instruction sets), fastrnn's NumPy reference, PyTorch (ONNX Runtime is in
``onnx_contender``); the oracle check they all pass before timing."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .configs import Config, make_input, make_weights, stream_inputs, valid_mask
from .engine import engine

PEERS = ["torch", "onnx"]

STREAM_CHECK_STEPS = 6
# The SGD update is executed (its cost is part of a training step) but kept tiny: with a real
# learning rate, hundreds of repetitions on one batch drifted the weights into saturation, and the
# cost of a step changed along the way (fastrnn's T5 went from 22 ms to 200 ms per step).
SGD_LR = 1e-9


class Unavailable(Exception):
    """A contender that does not exist (not installed, not implemented yet): shown as n/a."""


@dataclass
class Runner:
    """A prepared contender for one configuration.

    ``run`` is the timed call (all inputs prebuilt; streaming runners carry their state).
    ``check`` returns a dict of NumPy arrays compared against the oracle (outputs and final
    states, or gradients for training).  ``ctx`` wraps each timing sample (torch's
    inference_mode, fastrnn's instruction set).  ``note`` is printed in the table's notes.
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


def outputs(y, states) -> dict:
    """The check dict of a forward: the output and the final states, as NumPy arrays."""
    return {"y": np.asarray(y), **{f"state{i}": np.asarray(s) for i, s in enumerate(states)}}


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
    if cfg.mode == "train_model":
        from .model_contenders import fastrnn_model_runner
        runner = fastrnn_model_runner(fastrnn, cfg, backend, weights, name)
        if isa is not None:
            runner.ctx = lambda: engine().use_isa(isa)
        return runner
    layer = fastrnn_layer(fastrnn, cfg, backend, weights)
    if cfg.mode in ("forward", "packed"):
        runner = _fastrnn_forward(layer, cfg, name)
    elif cfg.mode == "stream":
        runner = _fastrnn_stream(layer, cfg, name)
    else:
        runner = _fastrnn_train(layer, cfg, weights, name)
    if isa is not None:
        runner.ctx = lambda: engine().use_isa(isa)
    return runner


def _fastrnn_forward(layer, cfg: Config, name: str) -> Runner:
    x, lengths = make_input(cfg), cfg.lengths()

    def run():
        return layer(x, lengths=lengths)

    def check():
        y, st = layer(x, lengths=lengths)
        return outputs(y, _as_states(st))

    return Runner(name, run, check)


def _fastrnn_stream(layer, cfg: Config, name: str) -> Runner:
    if not hasattr(layer, "step"):
        raise Unavailable("layer.step missing")
    x = make_input(cfg)
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
        return outputs(np.stack(ys), _as_states(st))

    return Runner(name, run, check, check_calls=STREAM_CHECK_STEPS)


def _fastrnn_train(layer, cfg: Config, weights: dict, name: str) -> Runner:
    """forward(training=True) + backward(dy) + plain SGD on the live parameters.  No gradient for
    x, as in PyTorch where x does not require one (its oneDNN backward computes it anyway: same
    time with x.requires_grad, measured); fastrnn skips that GEMM."""
    x, lengths = make_input(cfg), cfg.lengths()
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
        import fastrnn
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


def fastrnn_isas(fastrnn, wanted: Optional[str]) -> list:
    """The instruction sets to run fastrnn on (``--isa``): the first is the 'fastrnn' column."""
    eng = engine() if fastrnn is not None else None
    if eng is None or not hasattr(eng, "supported_isas"):
        return []
    runnable = eng.supported_isas()
    if not wanted:
        return [eng.isa()]
    if wanted == "all":
        return [eng.isa()] + [i for i in runnable if i != eng.isa()]
    isas = list(dict.fromkeys(s.strip() for s in wanted.split(",") if s.strip()))
    bad = [i for i in isas if i not in runnable]
    if bad:
        raise SystemExit(f"--isa: this CPU cannot run {', '.join(bad)} (it runs: {', '.join(runnable)})")
    return isas


def fastrnn_name(isas: list, isa: str) -> str:
    """Contender name of fastrnn on ``isa``: 'fastrnn' for the first of ``isas``."""
    return "fastrnn" if not isas or isa == isas[0] else f"fastrnn[{isa}]"


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


def _torch_states(st) -> list:
    st = st if isinstance(st, tuple) else (st,)
    return [s.detach().numpy().copy() for s in st]


def torch_runner(torch, cfg: Config, weights: dict) -> Runner:
    """``torch.nn.LSTM/GRU/RNN(batch_first=True)``: under ``inference_mode`` for inference rows;
    packed rows pack, run and unpack; training rows run forward, ``sum().backward()``, SGD;
    the model rows (``train_model``) are in ``model_contenders``."""
    if cfg.mode == "train_model":
        from .model_contenders import torch_model_runner
        return torch_model_runner(torch, cfg, weights)
    m = torch_module(torch, cfg, weights)
    if cfg.mode == "stream":
        return _torch_stream(torch, m.eval(), cfg)
    fwd = _torch_forward(torch, m, cfg)
    if cfg.mode.startswith("train"):
        return _torch_train(torch, m.train(), fwd, weights)
    m.eval()

    def check():
        with torch.inference_mode():
            y, st = fwd()
        return outputs(y.numpy().copy(), _torch_states(st))

    return Runner("torch", fwd, check, ctx=torch.inference_mode)


def _torch_forward(torch, m, cfg: Config) -> Callable:
    """The module on the row's batch; with lengths: pack, run, and unpack to a padded
    (B, T, H) output, as fastrnn returns it."""
    x = torch.from_numpy(make_input(cfg))
    lengths = cfg.lengths()
    if lengths is None:
        return lambda: m(x)
    lens_t = torch.from_numpy(lengths)
    rnn = torch.nn.utils.rnn

    def fwd():
        p = rnn.pack_padded_sequence(x, lens_t, batch_first=True, enforce_sorted=False)
        out, st = m(p)
        y, _ = rnn.pad_packed_sequence(out, batch_first=True, total_length=cfg.T)
        return y, st

    return fwd


def _torch_stream(torch, m, cfg: Config) -> Runner:
    xt = torch.from_numpy(make_input(cfg)).reshape(1, 1, cfg.I)
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
        return outputs(np.stack(ys), _torch_states(st))

    return Runner("torch", run, check, ctx=torch.inference_mode, check_calls=STREAM_CHECK_STEPS)


def _torch_train(torch, m, fwd: Callable, weights: dict) -> Runner:
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


# ---------------------------------------------------------------------------- peers, threads


def import_peers(skip: set) -> tuple:
    """(torch or None, onnxruntime or None, {contender: why n/a}) for the peers not skipped."""
    torch = ort = None
    na = {}
    if "torch" not in skip or "onnx" not in skip:
        try:
            import torch
        except ImportError as exc:
            na["torch"] = na["onnx"] = f"torch not installed ({exc})"
    if "onnx" not in skip and torch is not None:
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it)
            import onnxruntime as ort
        except ImportError as exc:
            na["onnx"] = f"onnx/onnxruntime not installed ({exc})"
    if torch is None and "torch" in skip:
        na["onnx"] = "needs torch for the export"
    return torch, ort, na


def set_threads(fastrnn, torch, threads: Optional[int]) -> tuple:
    """Apply ``--threads`` to torch and fastrnn; returns their thread counts (None: unknown)."""
    if threads:
        if torch is not None:
            torch.set_num_threads(threads)
        if fastrnn is not None and hasattr(fastrnn, "set_num_threads"):
            fastrnn.set_num_threads(threads)
    fr = fastrnn.get_num_threads() if hasattr(fastrnn, "get_num_threads") else None
    return (torch.get_num_threads() if torch is not None else None), fr
