"""Saving and loading models: one file of NumPy arrays and JSON, never a pickle.

:func:`save_model` (what :meth:`fastrnn.Sequential.save` runs) writes the architecture (each
layer's class and ``get_config()``), the weights, the loss, the optimizer state, the Dropout
generators' ``rng_state`` and the model's ``info``; :func:`load_model` reads it back. The file
format itself (atomic writes, checks of corrupt or foreign files) is :mod:`fastrnn.io`'s.
"""
import numpy as np

from .. import losses as losses_module
from .. import optim as optim_module
from ..layers import Dropout
from ..layers.base import parameter_budget
from .sequential import LAYER_CLASSES, Sequential


def save_model(model, path):
    """Write a :class:`~fastrnn.Sequential` model to one file.

    Parameters
    ----------
    model : Sequential
    path : str or os.PathLike

    Notes
    -----
    The file holds NumPy arrays and JSON only (never a pickle), and the write is atomic:
    an interrupted save leaves any previous file at ``path`` intact.
    """
    from .. import __version__
    from ..io import save_bundle

    arrays = {f"param.{name}": p for name, p in model.parameters().items()}
    meta = {
        "model": "Sequential",
        "fastrnn_version": __version__,
        "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                   for layer in model.layers],
        "epochs_trained": model.epochs_trained,
        "info": model.info,
        "rng": {str(i): layer.rng_state for i, layer in
                enumerate(model.layers) if isinstance(layer, Dropout)},
    }
    if model.loss is not None:
        meta["loss"] = {"class": type(model.loss).__name__, "config": model.loss.get_config()}
    if model.optimizer is not None:
        meta["optimizer"] = {"class": type(model.optimizer).__name__,
                             "state": _arrays_out(model.optimizer.state_dict(), "optimizer",
                                                  arrays)}
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
    """Read a model written by :meth:`Sequential.save`.

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
    Sequential
        The model with its weights, loss, optimizer state, epochs trained and ``info``.

    Nothing is unpickled: only the layer, loss and optimizer classes of fastrnn can be named by
    a file, built from their JSON configuration.

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
        if meta.get("model") != "Sequential":
            raise ValueError(f"it holds a {meta.get('model')!r} model, not a Sequential one")
        stored = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
        layers = []
        # the layers may allocate no more than the file's weights hold
        with parameter_budget(sum(a.nbytes for a in stored.values())):
            for spec in meta["layers"]:
                cls = LAYER_CLASSES.get(spec["class"])
                if cls is None:
                    raise ValueError(f"unknown layer class {spec['class']!r}")
                layers.append(cls(**spec["config"]))
        model = Sequential(layers)
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
        for i, state in meta.get("rng", {}).items():
            if not isinstance(layers[int(i)], Dropout):
                raise ValueError(f"it holds a random generator state for layer {i}, "
                                 f"which is not a Dropout layer")
            layers[int(i)].rng_state = state
        model.epochs_trained = int(meta.get("epochs_trained", 0))
        model.info = dict(meta.get("info", {}))
        if "loss" in meta:
            model.loss = _named(losses_module, meta["loss"]["class"], losses_module.Loss)(
                **meta["loss"]["config"])
        if "optimizer" in meta:
            cls = _named(optim_module, meta["optimizer"]["class"], optim_module.Optimizer)
            model.optimizer = cls.from_state_dict(
                _arrays_in(meta["optimizer"]["state"], arrays, path))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a valid fastrnn model file ({exc!r})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid fastrnn model file: {exc}") from None
    return model


def _named(module, name, base):
    """The class ``name`` of ``module`` if it is a subclass of ``base``; else ValueError."""
    cls = getattr(module, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"unknown {base.__name__.lower()} class {name!r}")
    return cls
