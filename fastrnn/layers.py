"""Layers: ``RNN``, ``LSTM`` and ``GRU``, and ``Dense``, ``Embedding`` and ``Dropout`` around them.

A recurrent layer owns its parameters (PyTorch's names and shapes), validates and casts what the
user passes, and hands C-contiguous arrays of its dtype to an engine: the NumPy reference
(``backend="reference"``) or the compiled one (``backend="compiled"``).

The layer protocol
------------------
Every layer class here implements :class:`Layer`, the protocol through which models
(:class:`fastrnn.Sequential`, :class:`fastrnn.EncoderDecoder`) use layers; a model never touches
a layer's private attributes.

``parameters()``
    The live parameter arrays, by name (an empty dict for ``Dropout``).
``grads``
    The gradients of the last backward pass, keyed like ``parameters()``.
``model_forward(x, lengths=None, *, state=None, training=False) -> (y, state)``
    The forward pass as a layer of a model, on input the model has already validated. State
    is explicit: a recurrent layer starts from ``state`` (None: zeros) and returns its final
    state; the other layers take None and return None. A recurrent layer's ``y`` is its whole
    output sequence, or with ``return_sequences=False`` its output at each sequence's last
    valid step. Truncated BPTT passes the state one window ended with to the next window.
``model_backward(dy, *, dstate=None, input_grad=True) -> (dx, dstate0)``
    The backward pass of the last ``model_forward(..., training=True)``: gradients of the
    loss with respect to ``y`` (and the final state) in; the gradients with respect to ``x``
    (None when ``input_grad`` is False, or for token input) and to the initial state (None
    for the stateless layers) out; fills ``grads``.
``step(x_t, state=None) -> (y_t, state)``
    One timestep, for streaming and generation (``state`` is None for the stateless layers).
``get_config()``
    Constructor arguments as a JSON-able dict: ``type(layer)(**layer.get_config())`` rebuilds
    the layer (without its weights), which is how model files name their layers.
``output_shape(input_shape)``
    The shape ``model_forward`` returns for an input of ``input_shape`` (None: any size).

``Dropout`` adds :attr:`Dropout.rng_state`, the state of its random generator, which a saved
model keeps so that training resumes with the same masks.

The user-facing calls keep their own contracts: ``y, state = rnn(x, state, lengths, training)``
and ``dx, dstate0 = rnn.backward(dy, dstate)`` for the recurrent layers (whole sequences, input
validated), ``y = dense(x, training)`` and ``dense.backward(dy)`` for the others.
"""
import math
from typing import Protocol, runtime_checkable

import numpy as np

from . import reference
from ._validation import (
    as_float_array, as_lengths, check_bool, check_choice, check_dtype, check_positive_int,
)

BACKENDS = ("compiled", "reference")


def _state_batch(state):
    """Batch size of a state ``h`` or ``(h, c)``."""
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def _compiled_engine():
    """The compiled engine package, or None when its extension could not be imported."""
    from . import engine
    return engine if engine.AVAILABLE else None


def _resolve_backend(backend):
    """``backend`` checked; None means the compiled engine when it is available (else the
    reference, which ``import fastrnn`` has warned about)."""
    if backend is None:
        return "compiled" if _compiled_engine() is not None else "reference"
    backend = check_choice("backend", backend, BACKENDS)
    if backend == "compiled" and _compiled_engine() is None:
        from . import engine
        raise ValueError("backend='compiled' is not available: the compiled engine cannot be "
                         f"imported ({engine.IMPORT_ERROR}); use backend='reference' or "
                         "reinstall fastrnn")
    return backend


@runtime_checkable
class Layer(Protocol):
    """The protocol every fastrnn layer implements, and the only way models use layers.

    ``isinstance(obj, Layer)`` checks that ``obj`` has these methods and attributes; the
    layer classes of this module all do. See the module docstring for the whole contract.

    Attributes
    ----------
    grads : dict of str to ndarray
        Gradients of the last backward pass, keyed like :meth:`parameters`.
    """

    grads: dict

    def parameters(self):
        """The live parameter arrays, by name.

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
            Valid timesteps of each sequence (recurrent layers skip the padded steps).
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
        """Advance one timestep: ``y_t, state = layer.step(x_t, state)``.

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
        """Constructor arguments as a JSON-able dict (``type(layer)(**config)`` rebuilds it).

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


class Recurrent:
    """Shared machinery of the recurrent layers; use :class:`RNN`, :class:`LSTM` or :class:`GRU`.

    ``isinstance(layer, Recurrent)`` tells the recurrent layers from the others. Its
    parameters, methods and attributes are those of the subclasses.
    """

    def __init__(self, cell, input_size, hidden_size, num_layers, bias, bidirectional, dtype,
                 seed, backend, return_sequences):
        self.return_sequences = check_bool("return_sequences", return_sequences)
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.dtype = check_dtype(dtype)
        self.backend = _resolve_backend(backend)
        self.cell = cell
        self.num_directions = 2 if self.bidirectional else 1
        self._params = self._init_params(seed)
        self.grads = {}
        self._cache = None      # what backward needs, set by a call with training=True
        self._stepper = None    # weights prepared for step(); dropped when they may change
        self._last_state = None  # the state step() returned last (trusted when passed back)

    # ------------------------------------------------------------------ parameters

    def _param_shapes(self):
        gates_h = reference.GATES[self.cell] * self.hidden_size
        shapes = {}
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for direction in range(self.num_directions):
                names = reference.parameter_names(layer, direction, self.bias)
                sizes = [(gates_h, layer_in), (gates_h, self.hidden_size), (gates_h,), (gates_h,)]
                shapes.update(zip(names, sizes))
        return shapes

    def _init_params(self, seed):
        """PyTorch's default: every parameter uniform in ``[-1/sqrt(hidden), 1/sqrt(hidden)]``."""
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {
            name: rng.uniform(-bound, bound, size=shape).astype(self.dtype)
            for name, shape in self._param_shapes().items()
        }

    def parameters(self):
        """The live parameter arrays, by PyTorch name; edits to them change the layer.

        Returns
        -------
        dict of str to ndarray
        """
        self._stepper = None     # the caller may write into them: step() prepares them again
        return dict(self._params)

    def state_dict(self):
        """Copies of the parameters, by PyTorch name, in PyTorch's shapes.

        Returns
        -------
        dict of str to ndarray
        """
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict):
        """Set every parameter from ``state_dict`` (e.g. a PyTorch module's, as NumPy arrays).

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Exactly the names of :meth:`parameters`, with the same shapes. Values are cast to
            the layer's dtype and copied into the live arrays.

        Raises
        ------
        ValueError
            If a name is missing or unexpected, or a shape differs.
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
            name: as_float_array(f"state_dict[{name!r}]", state_dict[name], self.dtype, p.shape)
            for name, p in self._params.items()
        }
        for name, value in checked.items():   # only after every entry passed its checks
            self._params[name][...] = value
        self._stepper = None

    # ------------------------------------------------------------------ input checks

    def _state_shape(self, batch):
        return (self.num_layers * self.num_directions, batch, self.hidden_size)

    def _check_state(self, name, state, batch):
        """``(h, c)`` arrays from a user's state (``c`` is None unless LSTM); None gives zeros."""
        shape = self._state_shape(batch)
        if state is None:
            zeros = np.zeros(shape, self.dtype)
            return zeros, (zeros.copy() if self.cell == "lstm" else None)
        if self.cell == "lstm":
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"{name} must be a tuple (h, c) for an LSTM, got "
                                f"{type(state).__name__}")
            h = as_float_array(f"{name}[0] (h)", state[0], self.dtype, shape)
            c = as_float_array(f"{name}[1] (c)", state[1], self.dtype, shape)
            return h, c
        if isinstance(state, (tuple, list)):
            raise TypeError(f"{name} must be an array h of shape {shape}, got "
                            f"{type(state).__name__}")
        return as_float_array(name, state, self.dtype, shape), None

    def _pack_state(self, h, c):
        return (h, c) if self.cell == "lstm" else h

    # ------------------------------------------------------------------ forward / backward

    def __call__(self, x, state=None, lengths=None, training=False):
        """Run the layer over a batch of sequences.

        Parameters
        ----------
        x : array_like, shape (batch, timesteps, input_size)
            Batch-first input; cast to the layer's dtype.
        state : optional
            Initial state: ``h`` (``(h, c)`` for an LSTM), each of shape
            ``(num_layers * num_directions, batch, hidden_size)``; None means zeros.
        lengths : array_like of int, shape (batch,), optional
            Valid timesteps of each sequence, each in ``1..timesteps``. Steps past a
            sequence's length are not computed: outputs there are 0 and the final state is
            the one at its last valid step.
        training : bool
            Keep what :meth:`backward` needs.

        Returns
        -------
        y : ndarray, shape (batch, timesteps, num_directions * hidden_size)
            Outputs of the last layer at every step.
        state : ndarray or tuple of ndarray
            Final state, shaped like ``state``.
        """
        x = as_float_array("x", x, self.dtype, (None, None, self.input_size))
        batch, timesteps, _ = x.shape
        lengths = as_lengths(lengths, batch, timesteps)
        h0, c0 = self._check_state("state", state, batch)
        y, h_n, c_n = self._forward(x, h0, c0, lengths, training)
        return y, self._pack_state(h_n, c_n)

    def _forward(self, x, h0, c0, lengths, training):
        """The forward pass on validated arrays: ``(y, h_n, c_n)``."""
        if training:
            self._stepper = None  # an optimizer step will follow
        args = (self.cell, x, self._params, h0, c0, lengths)
        shape = dict(num_layers=self.num_layers, bidirectional=self.bidirectional)
        if self.backend == "reference":
            y, h_n, c_n, saved = reference.forward(*args, **shape)
        else:
            y, h_n, c_n, saved = _compiled_engine().forward.forward(*args, **shape,
                                                                    training=training)
        # what BPTT needs: the reference's cache, or the compiled forward's workspace
        self._cache = (x, h0, c0, saved) if training else None
        return y, h_n, c_n

    def backward(self, dy, dstate=None, *, input_grad=True):
        """Backpropagation through time for the last call made with ``training=True``.

        Parameters
        ----------
        dy : array_like or None
            Gradient of the loss with respect to ``y``, same shape; None means zeros.
        dstate : optional
            Gradient with respect to the final state, shaped like it (for an LSTM a tuple
            ``(dh, dc)`` whose entries may be None); None means zeros.
        input_grad : bool
            Compute the gradient with respect to ``x`` (default).  False skips it, and its
            GEMM (a sixth of a training step's FLOPs when ``input_size == hidden_size``), when
            ``x`` is data that nothing upstream learns from; ``dx`` is then None.

        Returns
        -------
        dx : ndarray or None
            Gradient with respect to ``x`` (None if ``input_grad`` is False).
        dstate0 : ndarray or tuple of ndarray
            Gradient with respect to the initial state, shaped like it.

        Notes
        -----
        Fills :attr:`grads` with the gradient of every parameter, keyed like
        :meth:`parameters`.
        """
        cache = self._cache
        if cache is None:
            raise RuntimeError("backward() needs a forward call with training=True first")
        batch, timesteps, _ = cache[0].shape
        y_shape = (batch, timesteps, self.num_directions * self.hidden_size)
        if dy is not None:
            dy = as_float_array("dy", dy, self.dtype, y_shape)
        dh_n, dc_n = self._check_dstate(dstate, batch)
        if dy is None and dh_n is None and dc_n is None:
            raise ValueError("backward() needs dy or dstate; both are None")
        dx, dh0, dc0 = self._backward(dy, dh_n, dc_n, bool(input_grad))
        return dx, self._pack_state(dh0, dc0)

    def _backward(self, dy, dh_n, dc_n, input_grad=True):
        """BPTT on validated arrays: ``(dx, dh0, dc0)`` (dx None unless ``input_grad``);
        fills :attr:`grads`."""
        x, h0, c0, saved = self._cache
        if self.backend == "reference":
            dx, dh0, dc0, grads = reference.backward(saved, dy, dh_n, dc_n)
            dx = dx if input_grad else None
        else:
            from .engine import bptt

            dx, dh0, dc0, grads = bptt.backward(self.cell, self._params, saved, dy, dh_n, dc_n,
                                                 x=x, h0=h0, c0=c0, input_grad=input_grad)
        self.grads = grads
        return dx, dh0, dc0

    def _check_dstate(self, dstate, batch):
        if dstate is None:
            return None, None
        shape = self._state_shape(batch)
        if self.cell == "lstm":
            if not isinstance(dstate, (tuple, list)) or len(dstate) != 2:
                raise TypeError(f"dstate must be a tuple (dh, dc) for an LSTM, got "
                                f"{type(dstate).__name__}")
            return tuple(
                None if d is None else as_float_array(f"dstate[{i}]", d, self.dtype, shape)
                for i, d in enumerate(dstate)
            )
        return as_float_array("dstate", dstate, self.dtype, shape), None

    def step(self, x_t, state=None):
        """Advance one timestep, for streaming: ``y_t, state = layer.step(x_t, state)``.

        Parameters
        ----------
        x_t : array_like, shape (batch, input_size)
        state : optional
            As for :meth:`__call__`; None means zeros.

        Returns
        -------
        y_t : ndarray, shape (batch, hidden_size)
            Output of the last layer.
        state : ndarray or tuple of ndarray
            The new state, to pass to the next call.

        Notes
        -----
        The compiled backend prepares the weights once and reuses them from call to call;
        anything that may change them (:meth:`parameters`, :meth:`load_state_dict`, training)
        makes the next call prepare them again. A state this method returned is passed back
        without being checked again.
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional layer; this one is bidirectional")
        x_t = self._check_step_input(x_t)
        batch = x_t.shape[0]
        if state is None or (state is self._last_state and _state_batch(state) == batch):
            h0, c0 = (None, None) if state is None else self._unpack_state(state)
        else:
            h0, c0 = self._check_state("state", state, batch)
        if self.backend == "reference":
            if h0 is None:
                h0, c0 = self._check_state("state", None, batch)
            y, h_n, c_n, _ = reference.forward(
                self.cell, x_t[:, None, :], self._params, h0, c0, num_layers=self.num_layers
            )
            y_t = y[:, 0]
        else:
            if self._stepper is None:
                self._stepper = _compiled_engine().stream.make_stepper(self.cell, self._params,
                                                                self.num_layers)
            y_t, h_n, c_n = self._stepper.step(x_t, h0, c0)
        self._last_state = self._pack_state(h_n, c_n)
        return y_t, self._last_state

    def _check_step_input(self, x_t):
        """``x_t`` validated; a fast path for a finite C-contiguous array of the layer's dtype."""
        if (type(x_t) is np.ndarray and x_t.dtype == self.dtype and x_t.ndim == 2
                and x_t.shape[1] == self.input_size and x_t.shape[0] > 0
                and x_t.flags.c_contiguous and math.isfinite(np.vdot(x_t, x_t))):
            return x_t      # a finite sum of squares means every element is finite
        return as_float_array("x_t", x_t, self.dtype, (None, self.input_size))

    def _unpack_state(self, state):
        return state if self.cell == "lstm" else (state, None)

    # ------------------------------------------------------------------ in a model

    def get_config(self):
        """Constructor arguments as a JSON-able dict (``type(self)(**config)`` rebuilds it)."""
        config = dict(input_size=self.input_size, hidden_size=self.hidden_size,
                      num_layers=self.num_layers, bias=self.bias,
                      bidirectional=self.bidirectional, dtype=self.dtype.name,
                      backend=self.backend, return_sequences=self.return_sequences)
        if isinstance(self, RNN):
            config["nonlinearity"] = self.nonlinearity
        return config

    def output_shape(self, input_shape):
        """Shape of the layer's model output for an input of ``input_shape`` (None: any).

        Parameters
        ----------
        input_shape : tuple of int or None
            None for a size that is not fixed.

        Returns
        -------
        tuple
        """
        width = self.num_directions * self.hidden_size
        return (*input_shape[:2], width) if self.return_sequences else (input_shape[0], width)

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """Forward pass as a layer of a model (the :class:`Layer` protocol).

        Parameters
        ----------
        x : ndarray, shape (batch, timesteps, input_size)
            Validated input of the layer's dtype (the model checked it once).
        lengths : ndarray of int, shape (batch,), optional
            Valid timesteps of each sequence.
        state : optional
            Initial state ``h`` (``(h, c)`` for an LSTM) as a previous :meth:`model_forward`
            returned it, e.g. the state a truncated-BPTT window ended with; trusted, not
            checked again. None means zeros.
        training : bool
            Keep what :meth:`model_backward` needs.

        Returns
        -------
        y : ndarray
            The output sequence ``(batch, timesteps, num_directions * hidden_size)``, or with
            ``return_sequences=False`` the output at each sequence's last valid step,
            ``(batch, num_directions * hidden_size)``.
        state : ndarray or tuple of ndarray
            The final state, shaped like ``state``.
        """
        if state is None:
            h0, c0 = self._check_state("state", None, x.shape[0])
        else:
            h0, c0 = self._unpack_state(state)
        y, h_n, c_n = self._forward(x, h0, c0, lengths, training)
        state_out = self._pack_state(h_n, c_n)
        if self.return_sequences:
            return y, state_out
        # the output at the last valid step: the last layer's final state of each direction
        return np.concatenate(list(h_n[-self.num_directions:]), axis=1), state_out

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """Backward pass of the last ``model_forward(..., training=True)`` (the protocol).

        Parameters
        ----------
        dy : ndarray or None
            Gradient with respect to the ``y`` of :meth:`model_forward` (trusted: of the
            layer's dtype and shape); None means zeros.
        dstate : optional
            Gradient with respect to the final state (for an LSTM a tuple ``(dh, dc)`` whose
            entries may be None); None means zeros.
        input_grad : bool
            False skips the gradient with respect to ``x`` (``x`` is data).

        Returns
        -------
        dx : ndarray or None
            Gradient with respect to ``x`` (None if ``input_grad`` is False).
        dstate0 : ndarray or tuple of ndarray
            Gradient with respect to the initial state.
        """
        dh_n, dc_n = (None, None) if dstate is None else self._unpack_state(dstate)
        if not self.return_sequences:
            dh_last = self._last_step_grad(dy)
            dh_n = dh_last if dh_n is None else dh_last + dh_n
            dy = None
        dx, dh0, dc0 = self._backward(dy, dh_n, dc_n, input_grad)
        return dx, self._pack_state(dh0, dc0)

    def final_state_grad(self, dy):
        """The gradient with respect to the final state that a gradient with respect to the
        output at each sequence's last valid step (``return_sequences=False``) amounts to.

        Parameters
        ----------
        dy : array_like, shape (batch, num_directions * hidden_size)

        Returns
        -------
        dstate : ndarray or tuple
            ``dh_n`` of shape ``(num_layers * num_directions, batch, hidden_size)`` (zero but
            in the last layer's rows), for an LSTM ``(dh_n, None)``: a ``dstate`` for
            :meth:`backward`.
        """
        dy = as_float_array("dy", dy, self.dtype, (None, self.num_directions * self.hidden_size))
        return self._pack_state(self._last_step_grad(dy), None)

    def _last_step_grad(self, dy):
        dh_n = np.zeros(self._state_shape(dy.shape[0]), self.dtype)
        for d in range(self.num_directions):
            dh_n[-self.num_directions + d] = dy[:, d * self.hidden_size:(d + 1) * self.hidden_size]
        return dh_n

    def check_state(self, state, batch, name="state"):
        """Validate a state as :meth:`__call__` does.

        Parameters
        ----------
        state : array_like, tuple or None
            ``h`` (``(h, c)`` for an LSTM), each of shape
            ``(num_layers * num_directions, batch, hidden_size)``; None means zeros.
        batch : int
        name : str
            The argument's name in error messages.

        Returns
        -------
        h, c : ndarray
            Arrays of the layer's dtype; ``c`` is None unless the layer is an LSTM.

        Raises
        ------
        TypeError, ValueError
            For a state of the wrong kind, shape or dtype, or with NaN or Inf.
        """
        return self._check_state(name, state, batch)

    def check_dstate(self, dstate, batch):
        """Validate a final-state gradient as :meth:`backward` does.

        Parameters
        ----------
        dstate : array_like, tuple or None
            Shaped like the state (for an LSTM ``(dh, dc)``, entries may be None).
        batch : int

        Returns
        -------
        dh, dc : ndarray or None
        """
        return self._check_dstate(dstate, batch)

    def __repr__(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if isinstance(self, RNN) else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}{extra}, bias={self.bias}, "
                f"bidirectional={self.bidirectional}, dtype={self.dtype.name!r}, "
                f"backend={self.backend!r})")


_Recurrent = Recurrent      # the former private name of the base class


_SIGNATURE_DOC = """
    Parameters
    ----------
    input_size : int
        Features of each timestep of ``x``.
    hidden_size : int
        Units of the hidden state.
    num_layers : int
        Stacked layers; layer ``k > 0`` reads the outputs of layer ``k - 1``.
    bias : bool
        Whether each layer has the bias vectors ``bias_ih`` and ``bias_hh``.
    bidirectional : bool
        Run a second layer over the reversed sequences and concatenate its outputs.
    dtype : {"float32", "float64"}
    seed : int, optional
        Seed of the default initialisation (uniform in ``+-1/sqrt(hidden_size)``).
    backend : {"compiled", "reference"}, optional
        The compiled engine or the NumPy reference; the same results to tolerance.  Default:
        the compiled engine, or the reference when the compiled engine cannot be imported
        (``import fastrnn`` then warns once).
    return_sequences : bool
        In a model, pass on the whole output sequence (True) or only the output at each
        sequence's last valid step (False; for a bidirectional layer the forward direction's
        last valid step and the reverse direction's step 0, i.e. the final states).
"""


class RNN(Recurrent):
    __doc__ = """Elman RNN: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.
    """ + _SIGNATURE_DOC + """    nonlinearity : {"tanh", "relu"}
        The activation ``act``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 bidirectional=False, dtype="float32", seed=None, backend=None,
                 return_sequences=True):
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, num_layers, bias,
                         bidirectional, dtype, seed, backend,
                         return_sequences)


class LSTM(Recurrent):
    __doc__ = """Long short-term memory, gates ``i, f, g, o`` in PyTorch's order.

    ``c_t = f * c_{t-1} + i * g`` and ``h_t = o * tanh(c_t)``; the state is the tuple ``(h, c)``.
    """ + _SIGNATURE_DOC

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False,
                 dtype="float32", seed=None, backend=None,
                 return_sequences=True):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, bidirectional,
                         dtype, seed, backend,
                         return_sequences)


class GRU(Recurrent):
    __doc__ = """Gated recurrent unit, gates ``r, z, n`` in PyTorch's order.

    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))`` and ``h_t = (1 - z) * n + z * h_{t-1}``.
    """ + _SIGNATURE_DOC

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False,
                 dtype="float32", seed=None, backend=None,
                 return_sequences=True):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, bidirectional,
                         dtype, seed, backend,
                         return_sequences)


# ---------------------------------------------------------------------------------------------
# Feed-forward layers used around the recurrent ones in a model
# ---------------------------------------------------------------------------------------------

def _sigmoid(a):
    return 0.5 * np.tanh(0.5 * a) + 0.5


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


#: ``name -> (activation, derivative from the activation's output y and upstream dy)``
ACTIVATIONS = {
    None: (lambda a: a, lambda y, dy: dy),
    "sigmoid": (_sigmoid, lambda y, dy: dy * y * (1 - y)),
    "tanh": (np.tanh, lambda y, dy: dy * (1 - y * y)),
    "relu": (lambda a: np.maximum(a, 0), lambda y, dy: dy * (y > 0)),
    "softmax": (_softmax, lambda y, dy: y * (dy - (dy * y).sum(axis=-1, keepdims=True))),
}


class Dense:
    """Fully connected layer ``y = act(x W^T + b)``, applied to the last axis.

    Works on a single vector per sequence ``(batch, in_features)`` or on every timestep
    ``(batch, timesteps, in_features)``. Parameters follow ``torch.nn.Linear``: ``weight``
    ``(out_features, in_features)`` and ``bias`` ``(out_features,)``, both initialised uniform in
    ``+-1/sqrt(in_features)``.

    Parameters
    ----------
    in_features, out_features : int
    activation : {None, "sigmoid", "softmax", "tanh", "relu"}
    bias : bool
    dtype : {"float32", "float64"}
    seed : int, optional
    """

    def __init__(self, in_features, out_features, activation=None, bias=True, dtype="float32",
                 seed=None):
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.bias = check_bool("bias", bias)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self._params = {"weight": rng.uniform(-bound, bound, (self.out_features,
                                                              self.in_features)).astype(self.dtype)}
        if self.bias:
            self._params["bias"] = rng.uniform(-bound, bound, self.out_features).astype(self.dtype)
        self.grads = {}
        self._cache = None

    def parameters(self):
        """The live parameter arrays ``weight`` (and ``bias``), by name."""
        return dict(self._params)

    def linear(self, x):
        """The pre-activation ``x W^T + b`` (the logits when the activation is dropped).

        Parameters
        ----------
        x : ndarray, shape (..., in_features)

        Returns
        -------
        ndarray, shape (..., out_features)
        """
        out = x @ self._params["weight"].T
        if self.bias:
            out += self._params["bias"]
        return out

    def __call__(self, x, training=False):
        """Apply the layer to ``x`` of shape ``(..., in_features)``; keep a cache if training.

        Returns
        -------
        ndarray, shape ``(..., out_features)``
        """
        x = as_float_array("x", x, self.dtype, (None,) * (np.ndim(x) - 1) + (self.in_features,))
        return self._forward(x, training)

    def _forward(self, x, training):
        y = ACTIVATIONS[self.activation][0](self.linear(x))
        self._cache = (x, y) if training else None
        return y

    def get_config(self):
        """Constructor arguments as a JSON-able dict."""
        return dict(in_features=self.in_features, out_features=self.out_features,
                    activation=self.activation, bias=self.bias, dtype=self.dtype.name)

    def output_shape(self, input_shape):
        """``input_shape`` with its last entry replaced by ``out_features``.

        Parameters
        ----------
        input_shape : tuple of int or None
            None for a size that is not fixed.

        Returns
        -------
        tuple
        """
        return (*input_shape[:-1], self.out_features)

    def model_forward(self, x, lengths=None, *, state=None, training=False, logits=False):
        """Forward pass as a layer of a model (the :class:`Layer` protocol).

        Parameters
        ----------
        x : ndarray
            Validated input (the model checked it once).
        lengths : ndarray, optional
            Ignored: the layer works on each timestep alike.
        state : None
            The layer has no state.
        training : bool
            Keep what :meth:`model_backward` needs.
        logits : bool
            Return the pre-activation :meth:`linear` (for a loss computed from logits);
            :meth:`model_backward` then skips the activation.

        Returns
        -------
        y : ndarray, shape ``(..., out_features)``
        state : None
        """
        if logits:
            out = self.linear(x)
            self._cache = (x, None) if training else None
            return out, None
        return self._forward(x, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """Backward pass of the last ``model_forward(..., training=True)`` (the protocol).

        Parameters
        ----------
        dy : ndarray
            Gradient with respect to the ``y`` of :meth:`model_forward`: to the output, or to
            the pre-activation if that forward returned logits.
        dstate : None
            The layer has no state.
        input_grad : bool
            False skips the input gradient (the input is data).

        Returns
        -------
        dx : ndarray or None
        dstate0 : None
        """
        through_activation = self._cache is None or self._cache[1] is not None
        return self.backward(dy, through_activation, input_grad=input_grad), None

    def step(self, x_t, state=None):
        """Apply the layer to one timestep ``x_t`` of shape ``(batch, in_features)``.

        Parameters
        ----------
        x_t : array_like, shape (batch, in_features)
        state : None
            The layer has no state.

        Returns
        -------
        y_t : ndarray, shape (batch, out_features)
        state : None
        """
        return self(x_t), None

    def backward(self, dy, through_activation=True, *, input_grad=True):
        """Gradient with respect to the input (None if not ``input_grad``); fills :attr:`grads`.

        Parameters
        ----------
        dy : ndarray
            Gradient with respect to the output, or to the pre-activation when
            ``through_activation`` is False (as a loss computed from logits gives).
        input_grad : bool
            False skips the input gradient (the input is data) and returns None.
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a call with training=True first")
        x, y = self._cache
        da = ACTIVATIONS[self.activation][1](y, dy) if through_activation else dy
        x2 = x.reshape(-1, self.in_features)
        da2 = da.reshape(-1, self.out_features)
        self.grads = {"weight": da2.T @ x2}
        if self.bias:
            self.grads["bias"] = da2.sum(axis=0)
        return da @ self._params["weight"] if input_grad else None

    def __repr__(self):
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r}, bias={self.bias})")


class Embedding:
    """Lookup table from integer tokens to vectors, as ``torch.nn.Embedding``.

    Parameters
    ----------
    num_embeddings : int
        Vocabulary size; tokens are ``0..num_embeddings-1``.
    embedding_dim : int
    padding_idx : int, optional
        A token whose vector is zero and never trained (the padding token).
    dtype : {"float32", "float64"}
    seed : int, optional
        The weights are initialised from the standard normal distribution.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype="float32",
                 seed=None):
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        if padding_idx is not None and not (0 <= padding_idx < self.num_embeddings):
            raise ValueError(f"padding_idx must be in 0..{self.num_embeddings - 1}, "
                             f"got {padding_idx}")
        self.padding_idx = padding_idx
        self.dtype = check_dtype(dtype)
        weight = np.random.default_rng(seed).standard_normal(
            (self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            weight[padding_idx] = 0
        self._params = {"weight": weight}
        self.grads = {}
        self._cache = None

    def parameters(self):
        """The live parameter array ``weight``, by name."""
        return dict(self._params)

    def check_tokens(self, tokens, name="x"):
        """``tokens`` as an int64 array, or a clear error for non-integers and out-of-range ids.

        Parameters
        ----------
        tokens : array_like of int
        name : str
            The argument's name in error messages.

        Returns
        -------
        ndarray of int64

        Raises
        ------
        TypeError, ValueError
            For non-integers, an empty array or ids outside ``0..num_embeddings-1``.
        """
        arr = np.asarray(tokens)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must be integer token ids for an Embedding, "
                            f"got dtype {arr.dtype}")
        if arr.size == 0:
            raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
        if arr.min() < 0 or arr.max() >= self.num_embeddings:
            raise ValueError(f"{name} must hold token ids in 0..{self.num_embeddings - 1}, "
                             f"got values from {arr.min()} to {arr.max()}")
        return arr.astype(np.int64, copy=False)

    def __call__(self, tokens, training=False):
        """Vectors of ``tokens`` (any integer shape): shape ``tokens.shape + (embedding_dim,)``."""
        return self._forward(self.check_tokens(tokens), training)

    def _forward(self, tokens, training):
        self._cache = tokens if training else None
        return self._params["weight"][tokens]

    def get_config(self):
        """Constructor arguments as a JSON-able dict."""
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                    padding_idx=self.padding_idx, dtype=self.dtype.name)

    def output_shape(self, input_shape):
        """``input_shape + (embedding_dim,)``.

        Parameters
        ----------
        input_shape : tuple of int or None
            None for a size that is not fixed.

        Returns
        -------
        tuple
        """
        return (*input_shape, self.embedding_dim)

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """Forward pass as a layer of a model (the :class:`Layer` protocol).

        Parameters
        ----------
        x : ndarray of int64
            Token ids the model validated with :meth:`check_tokens`.
        lengths : ndarray, optional
            Ignored: padding tokens look up the padding vector.
        state : None
            The layer has no state.
        training : bool
            Keep what :meth:`model_backward` needs.

        Returns
        -------
        y : ndarray, shape ``x.shape + (embedding_dim,)``
        state : None
        """
        return self._forward(x, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """Backward pass of the last ``model_forward(..., training=True)``; fills :attr:`grads`.

        Parameters
        ----------
        dy : ndarray, shape ``tokens.shape + (embedding_dim,)``
            Gradient with respect to the vectors.
        dstate : None
            The layer has no state.
        input_grad : bool
            Ignored: tokens have no gradient.

        Returns
        -------
        dx, dstate0 : None
            Tokens have no gradient; the layer has no state.
        """
        return self.backward(dy), None

    def step(self, x_t, state=None):
        """Vectors of one timestep of tokens ``x_t`` (shape ``(batch,)``).

        Parameters
        ----------
        x_t : array_like of int, shape (batch,)
        state : None
            The layer has no state.

        Returns
        -------
        y_t : ndarray, shape (batch, embedding_dim)
        state : None
        """
        return self._forward(self.check_tokens(x_t, "x_t"), False), None

    def backward(self, dy):
        """Fill :attr:`grads` (rows of repeated tokens add up; the padding row stays 0).

        Parameters
        ----------
        dy : ndarray, shape ``tokens.shape + (embedding_dim,)``
            Gradient with respect to the vectors of the last training call.

        Returns
        -------
        None
            Tokens have no gradient.
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a call with training=True first")
        grad = np.zeros_like(self._params["weight"])
        np.add.at(grad, self._cache.ravel(), dy.reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        self.grads = {"weight": grad}
        return None

    def __repr__(self):
        return (f"Embedding({self.num_embeddings}, {self.embedding_dim}, "
                f"padding_idx={self.padding_idx})")


class Dropout:
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the
    rest by ``1 / (1 - p)``; outside training, the identity.

    Parameters
    ----------
    p : float
        Probability of dropping an element, in ``[0, 1)``.
    seed : int, optional
    """

    def __init__(self, p=0.5, seed=None):
        if not (0.0 <= p < 1.0):
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p = float(p)
        self._rng = np.random.default_rng(seed)
        self._mask = None
        self.grads = {}

    def parameters(self):
        """Dropout has no parameters: an empty dict."""
        return {}

    def __call__(self, x, training=False):
        """Apply dropout to ``x`` when ``training``; return ``x`` unchanged otherwise."""
        if not training or self.p == 0.0:
            self._mask = None
            return x
        keep = self._rng.random(np.shape(x)) >= self.p
        self._mask = keep.astype(np.asarray(x).dtype) / (1.0 - self.p)
        return x * self._mask

    def backward(self, dy):
        """Gradient with respect to the input: the same mask applied to ``dy``.

        Parameters
        ----------
        dy : ndarray
            Gradient with respect to the output of the last call.

        Returns
        -------
        ndarray
        """
        return dy if self._mask is None else dy * self._mask

    def get_config(self):
        """Constructor arguments as a JSON-able dict."""
        return dict(p=self.p)

    def output_shape(self, input_shape):
        """The input shape: dropout keeps shapes.

        Parameters
        ----------
        input_shape : tuple of int or None
            None for a size that is not fixed.

        Returns
        -------
        tuple
        """
        return tuple(input_shape)

    @property
    def rng_state(self):
        """The state of the random generator that draws the masks (a JSON-able dict).

        Setting it (e.g. to a value read back from a model file) makes the following masks
        those that would have followed when it was read.
        """
        return self._rng.bit_generator.state

    @rng_state.setter
    def rng_state(self, state):
        self._rng.bit_generator.state = state

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """Forward pass as a layer of a model (the :class:`Layer` protocol).

        Parameters
        ----------
        x : ndarray
            Validated input (the model checked it once).
        lengths : ndarray, optional
            Ignored: the layer works on each timestep alike.
        state : None
            The layer has no state.
        training : bool
            Keep what :meth:`model_backward` needs.

        Returns
        -------
        y : ndarray
            ``x`` with dropout applied when ``training``, else ``x`` itself.
        state : None
        """
        return self(x, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """Backward pass of the last ``model_forward`` (the protocol).

        Parameters
        ----------
        dy : ndarray
            Gradient with respect to the output.
        dstate : None
            The layer has no state.
        input_grad : bool
            False returns None for ``dx``.

        Returns
        -------
        dx : ndarray or None
            ``dy`` through the same mask (None if ``input_grad`` is False).
        dstate0 : None
        """
        return (self.backward(dy) if input_grad else None), None

    def step(self, x_t, state=None):
        """One timestep outside training: the identity.

        Parameters
        ----------
        x_t : array_like
        state : None
            The layer has no state.

        Returns
        -------
        y_t : array_like
            ``x_t`` itself.
        state : None
        """
        return x_t, None

    def __repr__(self):
        return f"Dropout(p={self.p})"
