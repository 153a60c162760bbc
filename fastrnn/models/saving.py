"""Saving and loading models: one file of NumPy arrays and JSON, never a pickle.

:func:`save_model` (what :meth:`fastrnn.Sequential.save` and
:meth:`fastrnn.EncoderDecoder.save` run) writes the architecture (a Sequential's layers, each
by its class and ``get_config()``; an EncoderDecoder's ``get_config()``), the weights, the
loss, the optimizer state, the dropout generators' ``rng_state`` (Dropout layers and recurrent
layers), the state of the callbacks of the last ``fit`` (a learning-rate schedule's, early
stopping's: see :mod:`fastrnn.callbacks`), the epochs trained, the model's ``info`` and a
classifier's ``classes_``; :func:`load_model` reads it back. The file
format itself (atomic writes, checks of corrupt or foreign files) is :mod:`fastrnn.io`'s.
"""
import numpy as np

from .. import losses as losses_module
from .. import optim as optim_module
from ..layers.base import parameter_budget
from .seq2seq import EncoderDecoder
from .sequential import LAYER_CLASSES, Sequential, class_array

#: the kinds of class labels a model file keeps (JSON's scalars)
JSON_LABELS = (str, int, float, bool)


def save_model(model, path):
    """Write a :class:`~fastrnn.Sequential` or :class:`~fastrnn.EncoderDecoder` model to one
    file.

    Parameters
    ----------
    model : Sequential or EncoderDecoder
    path : str or os.PathLike

    Notes
    -----
    The file holds NumPy arrays and JSON only (never a pickle), and the write is atomic:
    an interrupted save leaves any previous file at ``path`` intact.
    """
    from .. import __version__
    from ..io import save_bundle

    if not isinstance(model, (Sequential, EncoderDecoder)):
        raise TypeError(f"model must be a Sequential or an EncoderDecoder, got "
                        f"{type(model).__name__}")
    arrays = {f"param.{name}": p for name, p in model.parameters().items()}
    meta = {
        "model": type(model).__name__,
        "fastrnn_version": __version__,
        "epochs_trained": model.epochs_trained,
        "info": model.info,
    }
    if isinstance(model, Sequential):
        meta["layers"] = [{"class": type(layer).__name__, "config": layer.get_config()}
                          for layer in model.layers]
        meta["stateful"] = model.stateful    # (the flag; not the states it carries)
        meta["rng"] = {str(i): layer.rng_state for i, layer in enumerate(model.layers)
                       if hasattr(layer, "rng_state")}
        if model.classes_ is not None:
            classes = model.classes_.tolist()
            odd = {type(c).__name__ for c in classes if not isinstance(c, JSON_LABELS)}
            if odd:
                raise ValueError(f"model.classes_ holds labels of type {sorted(odd)}; a model "
                                 f"file keeps str, int, float or bool labels")
            meta["classes"] = classes
    else:
        meta["config"] = model.get_config()
    if model.loss is not None:
        meta["loss"] = {"class": type(model.loss).__name__, "config": model.loss.get_config()}
    if model.optimizer is not None:
        meta["optimizer"] = {"class": type(model.optimizer).__name__,
                             "state": _arrays_out(model.optimizer.state_dict(), "optimizer",
                                                  arrays)}
    callbacks = model.callbacks_state_dict()
    if callbacks:
        meta["callbacks"] = _arrays_out(callbacks, "callbacks", arrays)
    save_bundle(path, arrays, meta)


def _arrays_out(obj, prefix, arrays):
    """JSON-able copy of ``obj`` whose arrays move to ``arrays`` (replaced by their key)."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {str(k): _arrays_out(v, f"{prefix}.{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_arrays_out(v, f"{prefix}.{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _arrays_in(obj, arrays, path):
    """Inverse of :func:`_arrays_out`."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if key not in arrays:
                raise ValueError(f"{path}: the model file lacks the array {key!r}")
            return arrays[key]
        return {k: _arrays_in(v, arrays, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_arrays_in(v, arrays, path) for v in obj]
    return obj


def load_model(path, *, max_bytes=None, max_inflation=None):
    """Read a model written by :meth:`Sequential.save` or :meth:`EncoderDecoder.save`.

    Nothing is allocated beyond what the file justifies: its arrays are checked (sizes,
    headers) before they are read, and the layers its configuration describes may not need
    more weights than the file holds.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes, max_inflation : optional
        Limits of :func:`fastrnn.io.load_bundle` (default 4 GiB of arrays, deflated members
        inflating at most 100 times); raise them to load a larger file you trust.

    Returns
    -------
    Sequential or EncoderDecoder
        The model with its weights, loss, optimizer state, epochs trained, ``info``, (a
        classifier trained on labels) ``classes_`` and ``callback_states``: the state of the
        callbacks of the ``fit`` that wrote the file, which the next ``fit`` gives to its
        callbacks of the same classes (see :mod:`fastrnn.callbacks`).

    Nothing is unpickled: only the model, layer, loss and optimizer classes of fastrnn can be
    named by a file, built from their JSON configuration.

    Raises
    ------
    ValueError
        For a corrupt, truncated, foreign or newer-version file, or one whose contents do not
        fit together (unknown layer class, missing or misshapen weights).
    FileNotFoundError
        If ``path`` does not exist.
    """
    from .. import io

    limits = {"max_bytes": io.DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
              "max_inflation": (io.DEFAULT_MAX_INFLATION if max_inflation is None
                                else max_inflation)}
    arrays, meta = io.load_bundle(path, **limits)
    try:
        builders = {"Sequential": _build_sequential, "EncoderDecoder": _build_encoder_decoder}
        if meta.get("model") not in builders:
            raise ValueError(f"it holds a {meta.get('model')!r} model, not a Sequential or "
                             f"an EncoderDecoder")
        stored = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
        # the layers may allocate no more than the file's weights hold
        with parameter_budget(sum(a.nbytes for a in stored.values())):
            model = builders[meta["model"]](meta)
        params = model.parameters()
        if set(stored) != set(params):
            raise ValueError(f"its weights {sorted(stored)} do not match the architecture's "
                             f"{sorted(params)}")
        for name, p in params.items():
            if stored[name].shape != p.shape or stored[name].dtype != p.dtype:
                raise ValueError(f"weight {name!r} is {stored[name].dtype} of shape "
                                 f"{stored[name].shape}, the architecture needs {p.dtype} of "
                                 f"shape {p.shape}")
            p[...] = stored[name]
        model.epochs_trained = int(meta.get("epochs_trained", 0))
        model.info = dict(meta.get("info", {}))
        if "loss" in meta:
            model.loss = _named(losses_module, meta["loss"]["class"], losses_module.Loss)(
                **meta["loss"]["config"])
        if "optimizer" in meta:
            cls = _named(optim_module, meta["optimizer"]["class"], optim_module.Optimizer)
            model.optimizer = cls.from_state_dict(
                _arrays_in(meta["optimizer"]["state"], arrays, path))
        if "callbacks" in meta:
            model.callback_states = _callback_states(_arrays_in(meta["callbacks"], arrays,
                                                                path))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a valid fastrnn model file ({exc!r})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid fastrnn model file: {exc}") from None
    return model


def _callback_states(states):
    """The callbacks' states of a file, checked to be a list of ``{"class", "state"}``."""
    if not isinstance(states, list) or not all(
            isinstance(e, dict) and set(e) == {"class", "state"} and isinstance(e["class"], str)
            and isinstance(e["state"], dict) for e in states):
        raise ValueError("its callbacks' states are not a list of {'class': name, 'state': "
                         "{...}} entries")
    return states


def _build_sequential(meta):
    """The Sequential a file's metadata describes (weights not set), dropout generators' states
    set."""
    layers = []
    for spec in meta["layers"]:
        cls = LAYER_CLASSES.get(spec["class"])
        if cls is None:
            raise ValueError(f"unknown layer class {spec['class']!r}")
        layers.append(cls(**spec["config"]))
    for i, state in meta.get("rng", {}).items():
        if not hasattr(layers[int(i)], "rng_state"):
            raise ValueError(f"it holds a random generator state for layer {i}, "
                             f"which draws no dropout masks")
        layers[int(i)].rng_state = state
    model = Sequential(layers, stateful=meta.get("stateful", False))
    if "classes" in meta:
        if not isinstance(meta["classes"], list) or not all(
                isinstance(c, JSON_LABELS) for c in meta["classes"]):
            raise ValueError("its classes are not a list of labels")
        model.classes_ = class_array(meta["classes"])
    return model


def _build_encoder_decoder(meta):
    """The EncoderDecoder a file's metadata describes (weights not set)."""
    config = meta["config"]
    if not isinstance(config, dict):
        raise TypeError(f"its config is a {type(config).__name__}, not a JSON object")
    return EncoderDecoder(**config)


def _named(module, name, base):
    """The class ``name`` of ``module`` if it is a subclass of ``base``; else ValueError."""
    cls = getattr(module, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"unknown {base.__name__.lower()} class {name!r}")
    return cls
