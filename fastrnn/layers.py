"""Recurrent layers: ``RNN``, ``LSTM`` and ``GRU``.

A layer owns its parameters (PyTorch's names and shapes), validates and casts what the user
passes, and hands C-contiguous arrays of its dtype to an engine: the NumPy reference
(``backend="reference"``) or the compiled one (``backend="compiled"``).
"""
import numpy as np

from . import reference
from ._validation import (
    as_float_array, as_lengths, check_choice, check_dtype, check_positive_int,
)

BACKENDS = ("compiled", "reference")


def _compiled_engine():
    """The compiled engine module, or None when it is not available in this build."""
    try:
        from . import _engine
    except ImportError:  # pragma: no cover - the extension is built by every install
        return None
    return _engine


class _Recurrent:
    """Shared machinery of the recurrent layers; use :class:`RNN`, :class:`LSTM` or :class:`GRU`."""

    def __init__(self, cell, input_size, hidden_size, num_layers, bias, bidirectional, dtype,
                 seed, backend):
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
        self.bias = bool(bias)
        self.bidirectional = bool(bidirectional)
        self.dtype = check_dtype(dtype)
        self.backend = check_choice("backend", backend, BACKENDS)
        if self.backend == "compiled" and _compiled_engine() is None:
            raise ValueError("backend='compiled' is not available in this build; use 'reference'")
        self.cell = cell
        self.num_directions = 2 if self.bidirectional else 1
        self._params = self._init_params(seed)
        self.grads = {}
        self._cache = None      # what backward needs, set by a call with training=True

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
        args = (self.cell, x, self._params, h0, c0, lengths)
        shape = dict(num_layers=self.num_layers, bidirectional=self.bidirectional)
        if training or self.backend == "reference":
            # BPTT runs on the reference engine, which keeps its own cache.
            y, h_n, c_n, cache = reference.forward(*args, **shape)
        else:
            y, h_n, c_n, _ = _compiled_engine().forward(*args, **shape)
            cache = None
        self._cache = cache if training else None
        return y, self._pack_state(h_n, c_n)

    def backward(self, dy, dstate=None):
        """Backpropagation through time for the last call made with ``training=True``.

        Parameters
        ----------
        dy : array_like or None
            Gradient of the loss with respect to ``y``, same shape; None means zeros.
        dstate : optional
            Gradient with respect to the final state, shaped like it (for an LSTM a tuple
            ``(dh, dc)`` whose entries may be None); None means zeros.

        Returns
        -------
        dx : ndarray
            Gradient with respect to ``x``.
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
        x = cache.layer_inputs[0]
        batch, timesteps, _ = x.shape
        y_shape = (batch, timesteps, self.num_directions * self.hidden_size)
        if dy is not None:
            dy = as_float_array("dy", dy, self.dtype, y_shape)
        dh_n, dc_n = self._check_dstate(dstate, batch)
        if dy is None and dh_n is None and dc_n is None:
            raise ValueError("backward() needs dy or dstate; both are None")
        dx, dh0, dc0, grads = reference.backward(cache, dy, dh_n, dc_n)
        self.grads = grads
        return dx, self._pack_state(dh0, dc0)

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
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional layer; this one is bidirectional")
        x_t = as_float_array("x_t", x_t, self.dtype, (None, self.input_size))
        h0, c0 = self._check_state("state", state, x_t.shape[0])
        y, h_n, c_n, _ = reference.forward(
            self.cell, x_t[:, None, :], self._params, h0, c0, num_layers=self.num_layers
        )
        return y[:, 0], self._pack_state(h_n, c_n)

    def __repr__(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if isinstance(self, RNN) else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}{extra}, bias={self.bias}, "
                f"bidirectional={self.bidirectional}, dtype={self.dtype.name!r}, "
                f"backend={self.backend!r})")


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
    backend : {"compiled", "reference"}
        The compiled engine or the NumPy reference; the same results to tolerance.
"""


class RNN(_Recurrent):
    __doc__ = """Elman RNN: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.
    """ + _SIGNATURE_DOC + """    nonlinearity : {"tanh", "relu"}
        The activation ``act``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 bidirectional=False, dtype="float32", seed=None, backend="reference"):
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, num_layers, bias,
                         bidirectional, dtype, seed, backend)


class LSTM(_Recurrent):
    __doc__ = """Long short-term memory, gates ``i, f, g, o`` in PyTorch's order.

    ``c_t = f * c_{t-1} + i * g`` and ``h_t = o * tanh(c_t)``; the state is the tuple ``(h, c)``.
    """ + _SIGNATURE_DOC

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False,
                 dtype="float32", seed=None, backend="reference"):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, bidirectional,
                         dtype, seed, backend)


class GRU(_Recurrent):
    __doc__ = """Gated recurrent unit, gates ``r, z, n`` in PyTorch's order.

    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))`` and ``h_t = (1 - z) * n + z * h_{t-1}``.
    """ + _SIGNATURE_DOC

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False,
                 dtype="float32", seed=None, backend="reference"):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, bidirectional,
                         dtype, seed, backend)
