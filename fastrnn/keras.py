"""Keras 3 weights into a fastrnn :class:`~fastrnn.Sequential`: the same outputs as Keras's
``predict``.

``fastrnn.keras.load_weights(model, keras_model)`` copies the weights of a Keras 3 model (a
``keras.Sequential``, or a functional model that is a chain of layers, or a ``.keras`` file) into
a fastrnn :class:`~fastrnn.Sequential` of the same architecture, layer by layer:

========================================  ==============================================
Keras layer                               fastrnn layer
========================================  ==============================================
``Embedding(n, dim, mask_zero=m)``        ``Embedding(n, dim, mask_zero=m)``
``SimpleRNN(units, activation="tanh")``   ``RNN(input, units)`` (``"relu"``: ``nonlinearity="relu"``)
``LSTM(units)``                           ``LSTM(input, units)``
``GRU(units, reset_after=True)``          ``GRU(input, units)``
``GRU(units, reset_after=False)``         ``GRU(input, units, reset_after=False)``
``Bidirectional(layer)``                  the same layer with ``bidirectional=True``
``k`` stacked recurrent layers            one recurrent layer with ``num_layers=k``
``Dense(units, activation=a)``            ``Dense(input, units, activation=a)``
``GlobalAveragePooling1D()``              ``GlobalAveragePooling1D()``
``Dropout``, ``SpatialDropout1D``, ...    ``Dropout`` or nothing (inference ignores both)
========================================  ==============================================

How the weights move (fastrnn keeps PyTorch's layout): Keras kernels are ``(input, gates *
units)`` and are transposed; Keras's LSTM gates ``i, f, c, o`` are PyTorch's ``i, f, g, o``
(the same order); Keras's GRU gates ``z, r, h`` become ``r, z, n``, and its two bias rows
(``reset_after=True``: input and recurrent) become ``bias_ih`` and ``bias_hh``; the single bias of
Keras's LSTM, SimpleRNN and ``reset_after=False`` GRU goes to ``bias_ih``, with zeros in
``bias_hh``.

Refused, with an error that names the layer and the option (the result would not be Keras's):
a GRU whose ``reset_after`` differs from the fastrnn GRU's, ``activation`` / ``recurrent_activation`` other than the defaults (``tanh`` / ``sigmoid``; a
SimpleRNN may use ``relu``), ``go_backwards=True`` outside ``Bidirectional``, ``Bidirectional``
with a ``merge_mode`` other than ``"concat"``, ``return_sequences``, ``use_bias``,
``mask_zero``, ``stateful`` or sizes that differ from the fastrnn layer's, a fastrnn LSTM with
``proj_size > 0`` (Keras's LSTM has no projection), ``Masking`` layers (pass ``lengths`` to
fastrnn instead) and any other layer. A fastrnn layer with
``learn_initial_state=True`` gets zero initial states, which is what Keras runs.

Only reading a Keras model needs Keras (``pip install fastrnn[keras]``, with any backend: its
``numpy`` backend suffices for weights and inference).
"""
import os

import numpy as np

from .layers import (GRU, LSTM, RNN, Dense, Dropout, Embedding, GlobalAveragePooling1D,
                     Recurrent)
from .cell_table import parameter_names
from .layers.recurrent import INITIAL_STATE_NAMES

__all__ = ["load_weights"]

#: Keras layers that are the identity at inference (skipped, like fastrnn's Dropout)
_KERAS_IDENTITY = ("InputLayer", "Dropout", "SpatialDropout1D", "GaussianNoise",
                   "GaussianDropout", "AlphaDropout")
#: the Keras recurrent layer of each fastrnn cell
_KERAS_CELL = {"rnn_tanh": "SimpleRNN", "rnn_relu": "SimpleRNN", "rnn_leaky_relu": "SimpleRNN",
               "lstm": "LSTM", "gru": "GRU", "gru_reset_before": "GRU"}
#: Keras's gate blocks in PyTorch's order (LSTM: i, f, c, o is already i, f, g, o)
_GATE_ORDER = {"LSTM": (0, 1, 2, 3), "GRU": (1, 0, 2), "SimpleRNN": (0,)}
#: Keras's name of each fastrnn Dense activation
_DENSE_ACTIVATION = {None: "linear", "sigmoid": "sigmoid", "softmax": "softmax",
                     "tanh": "tanh", "relu": "relu"}


def _require_keras():
    try:
        import keras
    except ImportError:
        raise ImportError("reading Keras models needs Keras 3: pip install fastrnn[keras] (or "
                          "pip install keras, with a backend)") from None
    if not hasattr(keras, "version") or not keras.version().startswith("3"):
        raise ImportError(f"fastrnn.keras reads Keras 3 models, the installed Keras is "
                          f"{getattr(keras, '__version__', '?')}")
    return keras


def _as_keras_model(keras_model):
    """A Keras model from ``keras_model``: a model, or the path of a ``.keras`` file."""
    if isinstance(keras_model, (str, os.PathLike)):
        path = os.fspath(keras_model)
        if path.endswith(".weights.h5") or path.endswith(".h5"):
            raise ValueError(f"keras_model {path!r} is a weights file, which holds no "
                             f"architecture to read the weights by: build the Keras model, "
                             f"call its load_weights({path!r}) and pass the model")
        if not path.endswith(".keras"):
            raise ValueError(f"keras_model must be a Keras model or the path of a .keras "
                             f"file, got the path {path!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"keras_model: no such file {path!r}")
        return _require_keras().saving.load_model(path, compile=False)
    if not hasattr(keras_model, "layers") or not hasattr(keras_model, "get_weights"):
        raise TypeError(f"keras_model must be a Keras model or the path of a .keras file, "
                        f"got {type(keras_model).__name__}")
    return keras_model


def _numpy(variable):
    return np.asarray(_require_keras().ops.convert_to_numpy(variable))


def _kind(layer):
    return type(layer).__name__


def _config(layer):
    return layer.get_config()


def _describe(layer):
    return f"Keras layer {layer.name!r} ({_kind(layer)})"


def _refuse(layer, what):
    raise ValueError(f"{_describe(layer)}: {what}")


def _activation_name(value):
    """The name of a serialized Keras activation (a string, or a dict for a custom one)."""
    if isinstance(value, dict):
        return value.get("config", {}).get("name", value.get("class_name"))
    return value


def _check_option(layer, name, expected, extra=""):
    value = _config(layer).get(name)
    if name.endswith("activation"):
        value = _activation_name(value)
    if value != expected:
        _refuse(layer, f"{name}={value!r} is not supported (fastrnn computes {name}="
                       f"{expected!r} here{extra})")


def _recurrent_weights(layer, fast, direction, index, stateful):
    """``{name: array}`` of one Keras recurrent layer (one direction) of stacked layer
    ``index`` in PyTorch's names, layout and gate order, after checking its options against
    the fastrnn layer ``fast`` (in a model with ``stateful``)."""
    config = _config(layer)
    expected = _KERAS_CELL[fast.cell]
    if _kind(layer) != expected:
        _refuse(layer, f"expected a Keras {expected} for {fast!r} (stacked layer {index}), "
                       f"got a {_kind(layer)}")
    if expected == "SimpleRNN":
        if fast.cell == "rnn_leaky_relu":
            _refuse(layer, "fastrnn's leaky relu (slope 0.01) has no Keras SimpleRNN "
                           "counterpart (Keras's leaky_relu has slope 0.2)")
        _check_option(layer, "activation", fast.nonlinearity,
                      f": the fastrnn layer has nonlinearity={fast.nonlinearity!r}")
    else:
        _check_option(layer, "activation", "tanh")
        _check_option(layer, "recurrent_activation", "sigmoid")
    if expected == "GRU" and bool(config.get("reset_after", True)) != fast.reset_after:
        _refuse(layer, f"reset_after={bool(config.get('reset_after', True))} differs from "
                       f"reset_after={fast.reset_after} of {fast!r} (reset_after=False is the "
                       f"GRU of Cho et al. 2014: fastrnn.GRU(..., reset_after=False))")
    if bool(config.get("go_backwards")) != bool(direction):
        _refuse(layer, "go_backwards=True is only supported inside a Bidirectional layer "
                       "(fastrnn has no layer that runs only backwards)" if not direction else
                       "the backward layer of a Bidirectional must have go_backwards=True")
    if config.get("return_state"):
        _refuse(layer, "return_state=True does not fit a fastrnn Sequential")
    if getattr(fast, "proj_size", 0):
        _refuse(layer, f"Keras's {expected} has no projection, but {fast!r} has proj_size="
                       f"{fast.proj_size}")
    if config.get("units") != fast.hidden_size:
        _refuse(layer, f"units={config.get('units')} differs from hidden_size="
                       f"{fast.hidden_size} of {fast!r}")
    if bool(config.get("use_bias", True)) != fast.bias:
        _refuse(layer, f"use_bias={config.get('use_bias', True)} differs from bias={fast.bias} "
                       f"of {fast!r}")
    last = index == fast.num_layers - 1
    sequences = bool(config.get("return_sequences"))
    if sequences != (fast.return_sequences if last else True):
        _refuse(layer, f"return_sequences={sequences} differs from return_sequences="
                       f"{fast.return_sequences} of {fast!r}" if last else
                       f"return_sequences=False, but it is stacked layer {index} of "
                       f"{fast.num_layers} of {fast!r}, which passes on sequences")
    if bool(config.get("stateful")) != stateful:
        _refuse(layer, f"stateful={bool(config.get('stateful'))} differs from the fastrnn "
                       f"Sequential's stateful={stateful}")
    cell = layer.cell
    H, order = fast.hidden_size, _GATE_ORDER[expected]

    def blocks(a):      # Keras's (..., gates * H) -> PyTorch's gate order, gates first
        return np.concatenate([a[..., g * H:(g + 1) * H] for g in order], axis=-1)

    names = parameter_names(index, direction, fast.bias)
    out = {names[0]: blocks(_numpy(cell.kernel)).T,
           names[1]: blocks(_numpy(cell.recurrent_kernel)).T}
    if fast.bias:
        bias = _numpy(cell.bias)
        if bias.ndim == 2:              # GRU reset_after: input and recurrent biases
            out[names[2]], out[names[3]] = blocks(bias[0]), blocks(bias[1])
        else:
            out[names[2]], out[names[3]] = blocks(bias), np.zeros_like(bias)
    return out


def _load_recurrent(fast, keras_layers, stateful):
    """``{name: array}`` for the fastrnn recurrent layer ``fast`` from its ``num_layers`` Keras
    layers (``Bidirectional`` wrappers for a bidirectional one)."""
    weights = {}
    for index, layer in enumerate(keras_layers):
        config = _config(layer)
        if fast.bidirectional:
            if _kind(layer) != "Bidirectional":
                _refuse(layer, f"expected a Bidirectional layer for {fast!r} (stacked layer "
                               f"{index}), got a {_kind(layer)}")
            if config.get("merge_mode") != "concat":
                _refuse(layer, f"merge_mode={config.get('merge_mode')!r} is not supported "
                               f"(fastrnn concatenates the two directions: 'concat')")
            directions = (layer.forward_layer, layer.backward_layer)
        else:
            if _kind(layer) == "Bidirectional":
                _refuse(layer, f"a Bidirectional layer needs bidirectional=True in {fast!r}")
            directions = (layer,)
        for direction, inner in enumerate(directions):
            weights.update(_recurrent_weights(inner, fast, direction, index, stateful))
    for name in INITIAL_STATE_NAMES:        # Keras starts from zeros
        if fast.learn_initial_state and name in fast.parameters():
            weights[name] = np.zeros_like(fast.parameters()[name])
    return weights


def _load_dense(fast, layer):
    config = _config(layer)
    if _kind(layer) != "Dense":
        _refuse(layer, f"expected a Keras Dense for {fast!r}, got a {_kind(layer)}")
    _check_option(layer, "activation", _DENSE_ACTIVATION[fast.activation],
                  f": the fastrnn layer has activation={fast.activation!r}")
    if bool(config.get("use_bias", True)) != fast.bias:
        _refuse(layer, f"use_bias={config.get('use_bias', True)} differs from bias={fast.bias} "
                       f"of {fast!r}")
    out = {"weight": _numpy(layer.kernel).T}
    if fast.bias:
        out["bias"] = _numpy(layer.bias)
    return out


def _load_embedding(fast, layer):
    if _kind(layer) != "Embedding":
        _refuse(layer, f"expected a Keras Embedding for {fast!r}, got a {_kind(layer)}")
    mask_zero = bool(_config(layer).get("mask_zero"))
    if mask_zero != fast.mask_zero:
        _refuse(layer, f"mask_zero={mask_zero} differs from mask_zero={fast.mask_zero} of "
                       f"{fast!r}")
    return {"weight": _numpy(layer.embeddings)}


def _check_pooling(fast, layer):
    if _kind(layer) != "GlobalAveragePooling1D":
        _refuse(layer, f"expected a Keras GlobalAveragePooling1D for {fast!r}, got a "
                       f"{_kind(layer)}")
    if _config(layer).get("data_format", "channels_last") != "channels_last":
        _refuse(layer, "data_format must be 'channels_last' (batch, steps, features)")
    return {}


def load_weights(model, keras_model):
    """Copy a Keras 3 model's weights into a fastrnn :class:`~fastrnn.Sequential` of the same
    architecture, so that ``model.predict(x)`` gives ``keras_model.predict(x)``.

    Parameters
    ----------
    model : fastrnn.Sequential
        The model to load into; its layers must correspond to the Keras model's (see
        :mod:`fastrnn.keras`): a recurrent layer with ``num_layers=k`` takes ``k``
        consecutive Keras recurrent layers (``Bidirectional`` ones if it is bidirectional);
        fastrnn ``Dropout`` layers and Keras layers that are the identity at inference
        (``InputLayer``, ``Dropout``, ``SpatialDropout1D``, ``GaussianNoise``, ...) are passed
        over.
    keras_model : keras.Model or str or os.PathLike
        A ``keras.Sequential``, a functional ``keras.Model`` whose ``layers`` form a chain (each
        feeding the next, in the order of ``keras_model.layers``), or the path of a ``.keras``
        file (loaded with ``keras.saving.load_model``). A ``.weights.h5`` file holds no
        architecture: build the Keras model, call its ``load_weights(path)`` and pass the model.

    Returns
    -------
    fastrnn.Sequential
        ``model``, with the Keras weights (all or nothing: on an error no weight changes).

    Raises
    ------
    ValueError
        If the architectures differ (the error names the Keras layer and the option), or the
        Keras model uses an option whose outputs fastrnn does not compute: ``GRU(
        reset_after=False)``, activations other than the defaults (a SimpleRNN may use
        ``"relu"``), ``go_backwards=True`` outside ``Bidirectional``, a ``merge_mode`` other
        than ``"concat"``, ``Masking`` layers (pass ``lengths`` to fastrnn instead); or a
        fastrnn LSTM with ``proj_size > 0`` (Keras's LSTM has no projection).
    TypeError
        If ``model`` is not a Sequential or ``keras_model`` not a Keras model or path.
    ImportError
        If Keras 3 is needed and not installed (``pip install fastrnn[keras]``).

    Notes
    -----
    Keras's inputs are usually pre-padded (``keras.utils.pad_sequences``' default): pass
    ``padding="pre"`` to :meth:`~fastrnn.Sequential.predict` with ``lengths`` (or an
    ``Embedding(mask_zero=True)`` first) for such batches.

    Examples
    --------
    >>> import fastrnn, fastrnn.keras                           # doctest: +SKIP
    >>> model = fastrnn.Sequential([fastrnn.LSTM(3, 8, return_sequences=False),
    ...                             fastrnn.Dense(8, 1)])       # doctest: +SKIP
    >>> fastrnn.keras.load_weights(model, "model.keras")        # doctest: +SKIP
    """
    from .models import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastrnn.Sequential, got {type(model).__name__}")
    keras_model = _as_keras_model(keras_model)
    queue = [layer for layer in keras_model.layers if _kind(layer) not in _KERAS_IDENTITY]
    for layer in queue:
        if _kind(layer) == "Masking":
            _refuse(layer, "Masking layers are not supported: fastrnn skips padding by lengths "
                           "(pass lengths= to predict, or use Embedding(mask_zero=True))")
    state = {}
    for i, fast in enumerate(model.layers):
        if isinstance(fast, Dropout):
            continue
        need = fast.num_layers if isinstance(fast, Recurrent) else 1
        if len(queue) < need:
            raise ValueError(f"the Keras model has no layer left for model.layers[{i}] "
                             f"{fast!r}: the fastrnn model has more layers")
        taken, queue = queue[:need], queue[need:]
        if isinstance(fast, (RNN, LSTM, GRU)):
            weights = _load_recurrent(fast, taken, model.stateful)
        elif isinstance(fast, Dense):
            weights = _load_dense(fast, taken[0])
        elif isinstance(fast, Embedding):
            weights = _load_embedding(fast, taken[0])
        elif isinstance(fast, GlobalAveragePooling1D):
            weights = _check_pooling(fast, taken[0])
        else:
            raise ValueError(f"model.layers[{i}] is a {type(fast).__name__}, which "
                             f"fastrnn.keras.load_weights does not read (Embedding, RNN, LSTM, "
                             f"GRU, Dense, Dropout, GlobalAveragePooling1D)")
        state.update({f"{i}.{name}": value for name, value in weights.items()})
    if queue:
        raise ValueError(f"the Keras model has layers left over that the fastrnn model lacks: "
                         f"{[_describe(layer) for layer in queue]}")
    try:
        model.load_state_dict(state)
    except ValueError as exc:           # a size that differs: say it is Keras's
        raise ValueError(f"the Keras weights do not fit the fastrnn model: {exc}") from None
    return model
