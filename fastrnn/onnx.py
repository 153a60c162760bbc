"""Export to ONNX: a model or a layer as one graph that ONNX Runtime and OpenVINO run.

``fastrnn.onnx.export(model, "model.onnx")`` writes a graph whose input ``x`` is what
:meth:`Sequential.predict` takes (``(batch, timesteps, features)`` floats, or ``(batch,
timesteps)`` token ids for an ``Embedding`` first layer, ``(batch, features)`` for a ``Dense``
one; the batch and time axes are dynamic) and whose output ``y`` is what it returns (float32
graphs: ONNX Runtime runs its recurrent nodes in float32 only). With ``lengths=True`` the graph takes a second input ``lengths``
(int64, ``(batch,)``), passed to every recurrent node as ``sequence_lens``, and sequence
outputs are 0 at the padded steps, as ``predict`` gives them.

The recurrent layers become ONNX ``RNN`` / ``LSTM`` / ``GRU`` nodes, one per stacked layer
(``direction="bidirectional"`` for two directions; with ``lengths``, two forward nodes, the
second on the sequences reversed within their lengths), with the gates reordered from PyTorch's
order (LSTM ``i, f, g, o`` to ONNX's ``i, o, f, c``; GRU ``r, z, n`` to ``z, r, h`` with
``linear_before_reset=1``, which is the GRU fastrnn and PyTorch compute). ``Dense`` becomes
``MatMul`` + ``Add`` and its activation, ``Embedding`` a ``Gather``; ``Dropout`` is left out (it
is the identity at inference). Needs the ``onnx`` package (``pip install fastrnn[onnx]``).
"""
import warnings

import numpy as np

from .cell_table import LEAKY_RELU_SLOPE, parameter_names, peephole_name
from .layers import Dense, Dropout, Embedding, Recurrent
from .models import Sequential

__all__ = ["DEFAULT_OPSET", "export"]

#: the opset of the exported graphs (ONNX Runtime 1.10+ and OpenVINO 2022+ run it)
DEFAULT_OPSET = 17

#: PyTorch's gate blocks in ONNX's order
_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_relu": (0,),
               "rnn_leaky_relu": (0,), "lstm_peephole": (0, 3, 1, 2), "gru_reset_before": (1, 0, 2)}
_OP = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN",
       "rnn_leaky_relu": "RNN", "lstm_peephole": "LSTM", "gru_reset_before": "GRU"}
#: the cells whose ONNX nodes OpenVINO (2026.4) does not run as the ONNX spec says
_OPENVINO_MISSES = {
    "lstm_peephole": "OpenVINO ignores an ONNX LSTM node's peepholes (input P): there it gives "
                     "the outputs of the LSTM without them",
    "rnn_leaky_relu": "OpenVINO has no LeakyRelu activation in RNN nodes: it refuses the graph",
}
#: the ONNX activation of each vanilla RNN cell
_RNN_ACTIVATION = {"rnn_tanh": "Tanh", "rnn_relu": "Relu", "rnn_leaky_relu": "LeakyRelu"}
_ACTIVATION = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softmax": "Softmax"}


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install fastrnn[onnx] "
                          "(or pip install onnx)") from None
    return onnx


class _Graph:
    """The nodes and weights of the graph being built, with fresh names."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, stem):
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem, array):
        name = self.name(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs


def _recurrent_weights(layer, index):
    """``(W, R, B)`` of stacked layer ``index`` in ONNX's layout and gate order, and ``P``
    (the peepholes ``p_i, p_o, p_f``) for the peephole LSTM."""
    params = layer.parameters()
    H, order = layer.hidden_size, _GATE_ORDER[layer.cell]

    def blocks(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in order], axis=0)

    W, R, B, P = [], [], [], []
    for d in range(layer.num_directions):
        w_ih, w_hh, b_ih, b_hh = parameter_names(index, d)
        if layer.cell == "lstm_peephole":
            p = params[peephole_name(index, d)]            # p_i, p_f, p_o
            P.append(np.concatenate([p[:H], p[2 * H:], p[H:2 * H]]))   # ONNX: i, o, f
        W.append(blocks(params[w_ih]))
        R.append(blocks(params[w_hh]))
        zeros = np.zeros(len(order) * H, layer.dtype)
        B.append(np.concatenate([blocks(params[b_ih]) if layer.bias else zeros,
                                 blocks(params[b_hh]) if layer.bias else zeros]))
    return (np.stack(W), np.stack(R), np.stack(B)) + ((np.stack(P),) if P else ())


def _add_recurrent(g, layer, x, seq_lens):
    """Nodes of a recurrent layer on time-major ``x`` ``(T, B, F)``: ``(y, time_major)``."""
    D, H = layer.num_directions, layer.hidden_size
    extra = {}
    if layer.cell.startswith("rnn"):
        extra["activations"] = [_RNN_ACTIVATION[layer.cell]] * D
        if layer.cell == "rnn_leaky_relu":
            extra["activation_alpha"] = [LEAKY_RELU_SLOPE] * D
    if layer.cell in ("gru", "gru_reset_before"):   # (PyTorch's GRU: 1; Cho et al.'s: 0)
        extra["linear_before_reset"] = int(layer.cell == "gru")
    reshape_seq = g.const("shape_t_b_dh", np.array([0, 0, D * H], np.int64))
    n_out = 3 if layer.cell.startswith("lstm") else 2
    for index in range(layer.num_layers):
        weights = _recurrent_weights(layer, index)
        if D == 2 and seq_lens:
            y, y_h = _reverse_by_hand(g, layer, index, x, weights, seq_lens, extra)
        else:
            inputs = [g.const(f"{layer.cell}_l{index}_{k}", a) for k, a in zip("WRBP", weights)]
            y, y_h = g.node(_OP[layer.cell], _node_inputs(x, inputs, seq_lens), n_out=n_out,
                            hidden_size=H, direction="bidirectional" if D == 2 else "forward",
                            **extra)[:2]
        # Y (T, D, B, H) -> (T, B, D * H): the next layer's input
        x = g.node("Reshape", [g.node("Transpose", [y], perm=[0, 2, 1, 3]), reshape_seq])
    if layer.return_sequences:
        return x, True
    # the last layer's final state of each direction, side by side: (B, D * H)
    last = g.node("Transpose", [y_h], perm=[1, 0, 2])
    return g.node("Reshape", [last, g.const("shape_b_dh", np.array([0, D * H], np.int64))]), False


def _node_inputs(x, weights, seq_lens):
    """The inputs of a recurrent node: X, W, R, B, sequence_lens, and after two empty
    (initial state) inputs the peepholes P when there are (LSTM)."""
    return [x, *weights[:3], seq_lens] + (["", "", weights[3]] if len(weights) > 3 else [])


def _reverse_by_hand(g, layer, index, x, weights, seq_lens, extra):
    """A bidirectional layer with ``sequence_lens`` as two forward nodes, the second on each
    sequence reversed within its length (``ReverseSequence``): ``(Y, Y_h)`` as the
    bidirectional node gives them. (OpenVINO 2026.4 starts the reverse direction of a
    bidirectional node at the padded end; ONNX Runtime and the ONNX spec at the last valid
    step, as fastrnn and PyTorch do.)"""
    n_out = 3 if layer.cell.startswith("lstm") else 2
    axis1 = g.const("axis1", np.array([1], np.int64))

    def one_direction(inp, d):
        inputs = [g.const(f"{layer.cell}_l{index}_d{d}_{k}", a[d:d + 1])
                  for k, a in zip("WRBP", weights)]
        return g.node(_OP[layer.cell], _node_inputs(inp, inputs, seq_lens), n_out=n_out,
                      hidden_size=layer.hidden_size, direction="forward",
                      **{k: v[:1] if k.startswith("activation") else v
                         for k, v in extra.items()})[:2]

    def reverse(t):          # (T, B, ...) reversed within each sequence's length
        return g.node("ReverseSequence", [t, "lengths"], batch_axis=1, time_axis=0)  # int64

    y_f, h_f = one_direction(x, 0)
    y_r, h_r = one_direction(reverse(x), 1)
    y_r = g.node("Unsqueeze", [reverse(g.node("Squeeze", [y_r, axis1])), axis1])
    return g.node("Concat", [y_f, y_r], axis=1), g.node("Concat", [h_f, h_r], axis=0)


def _add_dense(g, layer, x):
    params = layer.parameters()
    y = g.node("MatMul", [x, g.const("dense_weight_t", params["weight"].T.copy())])
    if layer.bias:
        y = g.node("Add", [y, g.const("dense_bias", params["bias"])])
    if layer.activation is not None:
        extra = {"axis": -1} if layer.activation == "softmax" else {}
        y = g.node(_ACTIVATION[layer.activation], [y], **extra)
    return y


def export(model, path, *, lengths=False, opset=DEFAULT_OPSET):
    """Write ``model`` (a :class:`~fastrnn.Sequential` or one layer) as an ONNX file.

    Parameters
    ----------
    model : Sequential or layer
        RNN / LSTM / GRU (any number of layers, either direction), Dense, Embedding and Dropout
        layers. A recurrent layer must come first or after an Embedding (or another recurrent
        layer); Dense layers may come anywhere after.
    path : str or os.PathLike
        The file to write (atomically).
    lengths : bool
        Add the input ``lengths`` (int64, ``(batch,)``, each in ``1..timesteps``): padded steps
        are skipped like ``predict(x, lengths=...)`` skips them.
    opset : int
        The ONNX opset to declare (at least 14).

    Returns
    -------
    onnx.ModelProto
        The exported model (already checked with ``onnx.checker``).

    Raises
    ------
    ImportError
        Without the ``onnx`` package.
    TypeError, ValueError
        For a layer or a stack of layers the export does not cover (among them an LSTM with
        ``proj_size > 0``: ONNX's LSTM operator has no projection).

    Warns
    -----
    UserWarning
        For a peephole LSTM or a leaky-relu RNN, which OpenVINO does not run right (ONNX
        Runtime does).
    """
    from ._atomic import atomic_write
    from ._validation import check_bool, check_int

    onnx = _require_onnx()
    lengths = check_bool("lengths", lengths)
    opset = check_int("opset", opset, low=14)
    layers = [layer for layer in (model.layers if isinstance(model, Sequential) else [model])
              if not isinstance(layer, Dropout)]
    for layer in layers:
        if not isinstance(layer, (Recurrent, Dense, Embedding)):
            raise TypeError(f"export covers RNN, LSTM, GRU, Dense, Embedding and Dropout "
                            f"layers, got {type(layer).__name__}")
        if getattr(layer, "learn_initial_state", False):
            raise ValueError(f"export does not cover a learned initial state "
                             f"(learn_initial_state=True): {layer!r}")
        if getattr(layer, "proj_size", 0):
            raise ValueError(f"export does not cover an LSTM with a projection (proj_size="
                             f"{layer.proj_size}): ONNX's LSTM operator has none: {layer!r}")
        if getattr(layer, "cell", None) in _OPENVINO_MISSES:
            warnings.warn(f"{layer!r}: {_OPENVINO_MISSES[layer.cell]}; ONNX Runtime runs "
                          f"the exported graph right", UserWarning, stacklevel=2)
        if getattr(layer, "mask_zero", False) and not lengths:
            raise ValueError("a model whose Embedding has mask_zero=True runs on the lengths of "
                             "its sequences: export it with lengths=True (and pass "
                             "Embedding.compute_lengths(x) to the graph)")
    if not layers:
        raise ValueError("the model has no layer to export (Dropout alone is the identity)")
    g = _Graph(onnx)
    first = layers[0]
    tokens = isinstance(first, Embedding)
    dtype = first.dtype
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(np.int64) if tokens else dtype)
    if isinstance(first, Recurrent):
        x_shape = ["batch", "time", first.input_size]
    elif tokens:
        x_shape = ["batch", "time"]
    else:       # a Dense first: one vector per example
        x_shape = ["batch", first.in_features]
    inputs = [onnx.helper.make_tensor_value_info("x", elem, x_shape)]
    seq_lens = ""
    if lengths:
        inputs.append(onnx.helper.make_tensor_value_info("lengths", onnx.TensorProto.INT64,
                                                         ["batch"]))
        seq_lens = g.node("Cast", ["lengths"], to=onnx.TensorProto.INT32)
    x, time_major, sequence = "x", False, isinstance(first, (Recurrent, Embedding))
    for i, layer in enumerate(layers):
        if isinstance(layer, Embedding):
            if i:
                raise ValueError("an Embedding must be the first layer")
            x = g.node("Gather", [g.const("embedding", layer.parameters()["weight"]),
                                  g.node("Transpose", [x], perm=[1, 0])])
            time_major = True
        elif isinstance(layer, Recurrent):
            if not sequence:
                raise ValueError(f"layer {i} ({layer!r}) needs sequences, but the layer "
                                 f"before it returns one vector per sequence")
            if not time_major:
                x = g.node("Transpose", [x], perm=[1, 0, 2])
            x, sequence = _add_recurrent(g, layer, x, seq_lens)
            time_major = sequence
        else:
            x = _add_dense(g, layer, x)
    if sequence and time_major:
        x = g.node("Transpose", [x], perm=[1, 0, 2])
    if sequence and lengths:
        # 0 at the padded steps, as predict gives them: y * (arange(T) < lengths[:, None])
        steps = g.node("Range", [g.const("zero", np.array(0, np.int64)),
                                 g.node("Gather", [g.node("Shape", [x]),
                                                   g.const("one", np.array(1, np.int64))]),
                                 g.const("step", np.array(1, np.int64))])
        valid = g.node("Less", [g.node("Unsqueeze", [steps, g.const("axis0", np.array([0]))]),
                                g.node("Unsqueeze", ["lengths",
                                                     g.const("axis1", np.array([1]))])])
        mask = g.node("Cast", [g.node("Unsqueeze", [valid, g.const("axis2", np.array([2]))])],
                      to=onnx.helper.np_dtype_to_tensor_dtype(dtype))
        x = g.node("Mul", [x, mask])
    g.nodes.append(onnx.helper.make_node("Identity", [x], ["y"]))
    out_elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    out_shape = ["batch", "time", None] if sequence else ["batch", None]
    graph = onnx.helper.make_graph(g.nodes, "fastrnn", inputs,
                                   [onnx.helper.make_tensor_value_info("y", out_elem, out_shape)],
                                   g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="fastrnn")
    proto.ir_version = min(proto.ir_version, 8)   # what ONNX Runtime 1.10+ and OpenVINO read
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    atomic_write(path, lambda fileobj: fileobj.write(data))
    return proto
