"""The layer protocol, the choice of engine, and what the layer classes share.

:class:`Layer` documents the protocol once; the layer classes implement it and refer to it
from their own methods. ``_LayerBase`` holds what every layer class does alike: its
gradients, the cache a training call keeps (with the thread that trains the layer and copies
of what its backward pass reads), :meth:`~Layer.parameters` and :meth:`~Layer.get_config`.

Threads: inference (``training=False`` calls, ``step``) never writes to a layer, so any number
of threads may run it on one layer. Training is exclusive: from a call with ``training=True``
to the end of its backward pass (or for a whole ``fit``, see :func:`training_hold`) the layer
belongs to the thread that made the call, and another thread that tries to train it gets a
RuntimeError.
"""
import contextlib
import math
import threading
from typing import Protocol, runtime_checkable

import numpy as np

from .._validation import as_float_array, as_rng, check_choice

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

    Threads: calls with ``training=False`` and :meth:`step` may run from any number of threads
    at once on one layer. A call with ``training=True`` makes the layer its thread's until its
    backward pass succeeds; meanwhile a training call or backward pass from another thread
    raises a RuntimeError. A backward pass also raises one if an array it reads (the input,
    the initial state, a weight matrix) was edited in place since the forward pass.

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
            New arrays (``y_t`` is not a view of ``state``).

        Notes
        -----
        Safe from several threads at once on one layer, each thread with its own state.
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
    #: the attributes :meth:`_init_runtime` sets
    _runtime_names = ("_cache", "_cache_thread", "_saved", "_trainer", "_workspace")

    def __init__(self, params):
        self._params = params
        self.grads = {}
        self._init_runtime()

    def _init_runtime(self):
        """Set what calls leave on the layer, which copies and pickles do not keep."""
        self._cache = None          # what backward needs, set by a call with training=True
        self._cache_thread = None   # the thread that made that call
        self._saved = None          # copies of the arrays backward reads (_Saved)
        self._trainer = _Trainer(type(self).__name__)
        self._workspace = {}        # arrays reused by training calls (_buffer)

    def _buffer(self, name, shape, dtype):
        """An array of ``shape`` and ``dtype`` that the layer's training calls reuse from one
        call to the next (a large fresh array costs page faults at every step): the one of
        the last call under ``name`` if it fits, else a new one (uninitialised).

        Only for a training call's own arrays (what its cache keeps, its scratch), in the
        thread that holds the layer (after ``self._trainer.claim()``, until the backward pass
        is done): never for what a call returns (outputs, input gradients, ``grads``), which
        the caller may keep.
        """
        shape = tuple(shape)
        a = self._workspace.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._workspace[name] = np.empty(shape, dtype)
        return a

    def __getstate__(self):
        return {name: value for name, value in self.__dict__.items()
                if name not in self._runtime_names}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    def parameters(self):
        """See :meth:`Layer.parameters`."""
        return dict(self._params)

    def get_config(self):
        """See :meth:`Layer.get_config`."""
        return {name: _json_value(getattr(self, name)) for name in self._config_names}

    def state_dict(self):
        """Copies of the parameters, by name (PyTorch's names and shapes).

        Returns
        -------
        dict of str to ndarray
        """
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict):
        """Set every parameter from ``state_dict`` (e.g. a PyTorch module's, as NumPy arrays),
        all or nothing.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Exactly the names of :meth:`parameters`, with the same shapes. Values are cast to
            the layer's dtype and copied into the live arrays.

        Raises
        ------
        ValueError
            If a name is missing or unexpected, a shape differs, or a value is not finite.
        TypeError
            If ``state_dict`` is not a mapping or a value is not real numbers.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        missing = sorted(set(self._params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(self._params))
        if missing or unexpected:
            raise ValueError(f"state_dict does not match the layer's parameters: "
                             f"missing {missing}, unexpected {unexpected}")
        checked = {
            name: as_float_array(f"state_dict[{name!r}]", state_dict[name], p.dtype, p.shape)
            for name, p in self._params.items()
        }
        for name, value in checked.items():   # only after every entry passed its checks
            self._params[name][...] = value

    def _backward_reads(self, cache):
        """The arrays that the backward pass of ``cache`` reads and that a caller could edit
        in place after the forward pass, by the name an error message gives them."""
        return {}

    def _keep_for_backward(self, cache):
        """Keep ``cache`` for the backward pass of this training call, with copies of what it
        reads (:meth:`_backward_reads`); a RuntimeError if another thread trains the layer."""
        self._trainer.claim()
        self._saved = _Saved(self._backward_reads(cache), self._saved)
        self._cache, self._cache_thread = cache, threading.current_thread()

    def _training_cache(self, what="a call"):
        """What the last training call kept, for its backward pass in this thread (which then
        holds the layer until :meth:`_backward_done`), or a RuntimeError: no training call, one
        made in another thread, or an array it read edited in place since."""
        if self._cache is None:
            raise RuntimeError(f"backward() needs {what} with training=True first")
        self._trainer.claim()
        cache, thread = self._cache, self._cache_thread
        if thread is not threading.current_thread():
            self._trainer.done()
            raise RuntimeError(f"backward(): the last call with training=True on this "
                               f"{type(self).__name__} was made in thread {thread.name!r}; "
                               f"a thread can only run the backward pass of its own call")
        self._saved.check(self._backward_reads(cache))
        return cache

    def _backward_done(self):
        """The backward pass of this thread's training call is over: release the layer."""
        self._trainer.done()


class _Trainer:
    """Which thread trains a layer: at most one at a time.

    A thread holds the layer from a training call (:meth:`claim`) to the end of its backward
    pass (:meth:`done`), and for as long as it :meth:`hold` s it (a model's ``fit``; holds
    nest). Another thread that claims or holds it meanwhile gets a RuntimeError; a thread that
    has ended without its backward pass holds nothing.
    """

    def __init__(self, what):
        self.what = what
        self._lock = threading.Lock()
        self._thread = None     # the holder, if any
        self._pending = False   # a training call of the holder awaits its backward pass
        self._holds = 0

    def __reduce__(self):       # a copy of a layer is not being trained
        return type(self), (self.what,)

    def _take(self):
        me = threading.current_thread()
        owner = self._thread
        if owner is not me:
            if owner is not None and owner.is_alive():
                raise RuntimeError(
                    f"this {self.what} is being trained in thread {owner.name!r} (a call with "
                    f"training=True awaits its backward pass, or fit() is running); train a "
                    f"layer or a model from one thread at a time (inference from any number "
                    f"of threads is fine)")
            self._thread, self._pending, self._holds = me, False, 0

    def claim(self):
        """Hold the layer for a training call of this thread, until :meth:`done`."""
        with self._lock:
            self._take()
            self._pending = True

    def done(self):
        """The backward pass of this thread's training call is over."""
        with self._lock:
            if self._thread is threading.current_thread():
                self._pending = False
                if not self._holds:
                    self._thread = None

    def hold(self):
        """Hold the layer for this thread until :meth:`release`."""
        with self._lock:
            self._take()
            self._holds += 1

    def release(self):
        """End a :meth:`hold`; the last one frees the layer (a training call of this thread
        then needs its backward pass no longer)."""
        with self._lock:
            if self._thread is threading.current_thread():
                self._holds -= 1
                if not self._holds:
                    self._thread, self._pending = None, False


@contextlib.contextmanager
def training_hold(layers):
    """Hold ``layers`` for the calling thread's training (a model's ``fit`` or ``trace``):
    another thread that tries to train one of them meanwhile gets a RuntimeError.

    Parameters
    ----------
    layers : iterable of layers
    """
    held = []
    try:
        for layer in layers:
            layer._trainer.hold()
            held.append(layer)
        yield
    finally:
        for layer in held:
            layer._trainer.release()


class _Saved:
    """Copies of the arrays a backward pass reads, to tell whether one of them was edited in
    place after the forward pass (which would change the gradients silently).

    Only copies are kept (a reference to a layer's weights would keep ``step()`` checking
    them, see ``Recurrent._current_stepper``).

    Parameters
    ----------
    arrays : dict of str to ndarray
        The arrays, by the name an error message gives them.
    previous : _Saved or None
        The copies of the layer's previous training call, whose buffers are reused.
    """

    def __init__(self, arrays, previous=None):
        old = {} if previous is None else previous._copies
        self._copies = {}
        for name, a in arrays.items():
            copy = old.get(name)
            if copy is None or copy.shape != a.shape or copy.dtype != a.dtype:
                copy = np.empty(a.shape, a.dtype)
            np.copyto(copy, a)
            self._copies[name] = copy

    def check(self, arrays):
        """A RuntimeError naming the first of ``arrays`` that no longer holds its copy."""
        for name, a in arrays.items():
            if not same_bytes(a, self._copies[name]):
                raise RuntimeError(
                    f"{name} was modified in place after the forward pass with training=True, "
                    f"and the backward pass reads it: its gradients would be wrong. Run the "
                    f"forward pass again after changing it (or change a copy)")


def same_bytes(a, b):
    """True if the arrays ``a`` and ``b`` (same shape and dtype) hold the same bytes."""
    engine = _compiled_engine()
    if engine is not None and a.flags.c_contiguous and b.flags.c_contiguous:
        return engine._compiled.same_bytes(a, b)
    return np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def _json_value(value):
    """A constructor argument as JSON can hold it (a dtype by its name)."""
    return value.name if isinstance(value, np.dtype) else value


_budget = threading.local()


@contextlib.contextmanager
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


def constant_params(shapes, value, dtype):
    """Parameters filled with ``value`` (zeros for biases, ones for a norm's scale).

    Parameters
    ----------
    shapes : iterable of (str, tuple of int)
        The parameters' names and shapes (each is claimed from the :func:`parameter_budget`
        before it is allocated).
    value : float
    dtype : numpy.dtype

    Returns
    -------
    dict of str to ndarray
    """
    params = {}
    for name, shape in shapes:
        claim_parameter_bytes(math.prod(shape) * dtype.itemsize)
        params[name] = np.full(shape, value, dtype)
    return params


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
