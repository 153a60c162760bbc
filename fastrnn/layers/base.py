"""The layer protocol, the choice of engine, and what the layer classes share.

:class:`Layer` documents the protocol once; the layer classes implement it and refer to it
from their own methods. ``_LayerBase`` holds what every layer class does alike: its
gradients, the cache a training call keeps, :meth:`~Layer.parameters` and
:meth:`~Layer.get_config`.
"""
import math
import threading
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import numpy as np

from .._validation import as_rng, check_choice

BACKENDS = ("compiled", "reference")


def _compiled_engine():
    """The compiled engine package, or None when its extension could not be imported."""
    from .. import engine
    return engine if engine.AVAILABLE else None


def _resolve_backend(backend):
    """``backend`` checked; None means the compiled engine when it is available (else the
    reference, which ``import fastrnn`` has warned about)."""
    if backend is None:
        return "compiled" if _compiled_engine() is not None else "reference"
    backend = check_choice("backend", backend, BACKENDS)
    if backend == "compiled" and _compiled_engine() is None:
        from .. import engine
        raise ValueError("backend='compiled' is not available: the compiled engine cannot be "
                         f"imported ({engine.IMPORT_ERROR}); use backend='reference' or "
                         "reinstall fastrnn")
    return backend


@runtime_checkable
class Layer(Protocol):
    """The protocol every fastrnn layer implements, and the only way models use layers.

    Models (:class:`fastrnn.Sequential`, :class:`fastrnn.EncoderDecoder`) call these methods
    and never touch a layer's private attributes. ``isinstance(obj, Layer)`` checks that
    ``obj`` has them; every layer class of :mod:`fastrnn.layers` does.

    State is explicit: a recurrent layer starts from the state it is given and returns its
    final state (truncated BPTT passes the state one window ended with to the next window);
    the other layers take None and return None. ``Dropout`` adds
    :attr:`~fastrnn.Dropout.rng_state`, which a saved model keeps so that training resumes
    with the same masks.

    The user-facing calls keep their own contracts: ``y, state = rnn(x, state, lengths,
    training)`` and ``dx, dstate0 = rnn.backward(dy, dstate)`` for the recurrent layers
    (whole sequences, input validated), ``y = dense(x, training)`` and ``dense.backward(dy)``
    for the others.

    Attributes
    ----------
    grads : dict of str to ndarray
        Gradients of the last backward pass, keyed like :meth:`parameters`.
    """

    grads: dict

    def parameters(self):
        """The live parameter arrays, by name (an empty dict for a layer without any).

        Returns
        -------
        dict of str to ndarray
        """

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """Forward pass as a layer of a model, on input the model has already validated.

        Parameters
        ----------
        x : ndarray
            The output of the previous layer (or the model's validated input).
        lengths : ndarray of int, shape (batch,), optional
            Valid timesteps of each sequence (recurrent layers skip the padded steps; the
            other layers ignore it).
        state : optional
            Initial state of a recurrent layer, as its :meth:`model_forward` returned it
            (trusted, not checked again); None means zeros. Stateless layers take None.
        training : bool
            Keep what :meth:`model_backward` needs.

        Returns
        -------
        y : ndarray
            What the layer passes on to the next one.
        state : ndarray, tuple of ndarray or None
            The final state (None for the stateless layers).
        """

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """Backward pass of the last ``model_forward(..., training=True)``; fills :attr:`grads`.

        Parameters
        ----------
        dy : ndarray or None
            Gradient of the loss with respect to the ``y`` of :meth:`model_forward`.
        dstate : optional
            Gradient with respect to the final state (recurrent layers); None means zeros.
            Stateless layers take None.
        input_grad : bool
            False skips the gradient with respect to ``x`` (when ``x`` is data).

        Returns
        -------
        dx : ndarray or None
            Gradient with respect to ``x``; None if ``input_grad`` is False or ``x`` is tokens.
        dstate0 : ndarray, tuple of ndarray or None
            Gradient with respect to the initial state (None for the stateless layers).
        """

    def step(self, x_t, state=None):
        """Advance one timestep, for streaming and generation: ``y_t, state = layer.step(x_t,
        state)``.

        Parameters
        ----------
        x_t : array_like
            One timestep of input, ``(batch, features)`` (``(batch,)`` tokens for an
            Embedding).
        state : optional
            As returned by the previous call; None means zeros (stateless layers: None).

        Returns
        -------
        y_t : ndarray
        state : ndarray, tuple of ndarray or None
        """

    def get_config(self):
        """Constructor arguments as a JSON-able dict: ``type(layer)(**layer.get_config())``
        rebuilds the layer (without its weights), which is how model files name their layers.

        Returns
        -------
        dict
        """

    def output_shape(self, input_shape):
        """Shape of :meth:`model_forward`'s ``y`` for an input of ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int or None
            None for a size that is not fixed.

        Returns
        -------
        tuple of int or None
        """


class _LayerBase:
    """What the layer classes share (not part of the public API).

    A subclass keeps its parameters in the dict it passes to ``__init__``, stores each
    constructor argument under its own name and lists those names in ``_config_names``;
    :meth:`get_config` then needs nothing more.
    """

    _config_names = ()

    def __init__(self, params):
        self._params = params
        self.grads = {}
        self._cache = None      # what backward needs, set by a call with training=True

    def parameters(self):
        """See :meth:`Layer.parameters`."""
        return dict(self._params)

    def get_config(self):
        """See :meth:`Layer.get_config`."""
        return {name: _json_value(getattr(self, name)) for name in self._config_names}

    def _training_cache(self, what="a call"):
        """What the last training call kept, or a RuntimeError if there was none."""
        if self._cache is None:
            raise RuntimeError(f"backward() needs {what} with training=True first")
        return self._cache


def _json_value(value):
    """A constructor argument as JSON can hold it (a dtype by its name)."""
    return value.name if isinstance(value, np.dtype) else value


_budget = threading.local()


@contextmanager
def parameter_budget(nbytes):
    """Within the block, layers built on this thread may allocate at most ``nbytes`` bytes of
    parameters in all; one that would need more raises ValueError before allocating.

    Loading a model file builds its layers from their JSON configuration: the budget is what
    the file's weights hold, so that a crafted configuration (``hidden_size`` 20000 in a
    55 KB file) is refused instead of asking for gigabytes.

    Parameters
    ----------
    nbytes : int
    """
    outer = getattr(_budget, "left", None)
    _budget.left = nbytes
    try:
        yield
    finally:
        _budget.left = outer


def claim_parameter_bytes(nbytes):
    """Count ``nbytes`` of parameters against the :func:`parameter_budget` of this thread
    (if any), or raise ValueError if they exceed what is left of it."""
    left = getattr(_budget, "left", None)
    if left is None:
        return
    if nbytes > left:
        raise ValueError(f"the configuration asks for more parameters than the file holds "
                         f"({nbytes} more bytes, {left} left)")
    _budget.left = left - nbytes


def uniform_params(shapes, bound, dtype, seed):
    """Parameters drawn uniform in ``[-bound, bound]`` (PyTorch's default initialisation).

    Parameters
    ----------
    shapes : iterable of (str, tuple of int)
        The parameters' names and shapes, drawn in this order from one generator (each is
        claimed from the :func:`parameter_budget` before it is drawn).
    bound : float
    dtype : numpy.dtype
    seed : int or None

    Returns
    -------
    dict of str to ndarray
    """
    rng = as_rng("seed", seed)
    params = {}
    for name, shape in shapes:
        claim_parameter_bytes(math.prod(shape) * dtype.itemsize)
        params[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return params
