"""The recurrent layers ``RNN``, ``LSTM`` and ``GRU``, and :class:`Recurrent`, their shared base.

A recurrent layer owns its parameters (PyTorch's names and shapes), validates and casts what the
user passes, and hands C-contiguous arrays of its dtype to an engine: the NumPy reference
(``backend="reference"``) or the compiled one (``backend="compiled"``).
"""
import math
import sys
import warnings
from typing import NamedTuple

import numpy as np

from .. import reference
from .._masks import PADDINGS, to_post_padding, to_pre_padding
from .._validation import (
    as_float_array,
    as_lengths,
    as_rng,
    check_bool,
    check_choice,
    check_dtype,
    check_fraction,
    check_int,
    check_positive_int,
)
from ..cell_table import GATES, cell_spec, parameter_names, peephole_name, projection_name
from .base import _compiled_engine, _LayerBase, _resolve_backend, constant_params, uniform_params


def _take_rows(a, rows):
    """The batch rows ``rows`` of a state-shaped array (axis 1), C-contiguous; None stays
    None."""
    return None if a is None else np.ascontiguousarray(a[:, rows])


def _state_batch(state):
    """Batch size of a state ``h`` or ``(h, c)``."""
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def _references(params):
    """References to the arrays of ``params`` (a dict), summed."""
    return sum(sys.getrefcount(p) for p in params.values())


#: what :func:`_references` counts for an array that only its dict refers to
_ALONE = _references({"p": np.empty(0)})

#: the names of the learnable initial state's parameters (``learn_initial_state=True``)
INITIAL_STATE_NAMES = ("h0", "c0")


class _Cache(NamedTuple):
    """What a call with ``training=True`` keeps for its backward pass."""

    x: np.ndarray           # the engine's input (post-padded)
    h0: np.ndarray          # the initial state the call started from
    c0: object
    saved: object           # the reference's cache or the compiled workspace
    part: object            # None, or (rows, x, h0, c0) of the rows the compiled engine ran
    learned: bool           # whether h0, c0 came from the learned initial state
    pre_lengths: object     # the lengths of a pre-padded call (backward shifts dy and dx)


class Recurrent(_LayerBase):
    """Shared machinery of the recurrent layers; use :class:`RNN`, :class:`LSTM` or :class:`GRU`.

    ``isinstance(layer, Recurrent)`` tells the recurrent layers from the others. Its
    parameters, methods and attributes are those of the subclasses.
    """

    _config_names = ("input_size", "hidden_size", "num_layers", "bias", "bidirectional",
                     "dtype", "backend", "return_sequences", "learn_initial_state", "dropout",
                     "recurrent_dropout")

    #: units of the LSTM's projection (PyTorch's ``proj_size``); 0: none (RNN, GRU, LSTM)
    proj_size = 0

    def __init__(self, cell, input_size, hidden_size, num_layers, bias, bidirectional, dtype,
                 seed, backend, return_sequences, learn_initial_state=False, dropout=0.0,
                 recurrent_dropout=0.0):
        self.dropout = float(check_fraction("dropout", dropout))
        self.recurrent_dropout = float(check_fraction("recurrent_dropout", recurrent_dropout))
        if self.dropout > 0 and num_layers == 1:
            warnings.warn("dropout acts between stacked layers (after every layer but the last),"
                          f" so dropout={self.dropout} with num_layers=1 does nothing",
                          UserWarning, stacklevel=3)
        # the masks' generator: its own stream, apart from the initialisation's
        self._rng = as_rng("seed", seed).spawn(1)[0]
        self.return_sequences = check_bool("return_sequences", return_sequences)
        self.learn_initial_state = check_bool("learn_initial_state", learn_initial_state)
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.dtype = check_dtype(dtype)
        self.backend = _resolve_backend(backend)
        self.cell = cell
        self._has_c = cell_spec(cell).has_cell_state
        self.num_directions = 2 if self.bidirectional else 1
        # PyTorch's default: every parameter uniform in [-1/sqrt(hidden), 1/sqrt(hidden)]
        params = uniform_params(self._param_shapes(), 1.0 / np.sqrt(self.hidden_size),
                                self.dtype, seed)
        if self.learn_initial_state:    # after PyTorch's parameters, starting at zeros
            rows = self.num_layers * self.num_directions
            shapes = [("h0", (rows, self.state_size)), ("c0", (rows, self.hidden_size))]
            params.update(constant_params(shapes[:2 if self._has_c else 1], 0.0, self.dtype))
        super().__init__(params)

    _runtime_names = _LayerBase._runtime_names + ("_stepper", "_packing", "_weights_version",
                                                  "_last_state")

    def _init_runtime(self):
        super()._init_runtime()
        self._stepper = None        # the weights packed for step() (_current_stepper)
        self._packing = None        # the weights packed for inference calls (_current_packing)
        self._weights_version = 0   # counts the occasions someone may have written the weights
        self._last_state = None     # what step() returned last (in any thread), trusted

    # ------------------------------------------------------------------ parameters

    def _param_shapes(self):
        """``(name, shape)`` of every parameter in PyTorch's order (made one at a time, so
        that a budget stops a huge ``num_layers`` early)."""
        gates_h = GATES[self.cell] * self.hidden_size
        state = self.state_size
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else state * self.num_directions
            for direction in range(self.num_directions):
                names = parameter_names(layer, direction, self.bias)
                sizes = [(gates_h, layer_in), (gates_h, state), (gates_h,), (gates_h,)]
                yield from zip(names, sizes)
                if cell_spec(self.cell).has_peepholes:
                    yield peephole_name(layer, direction), (3 * self.hidden_size,)
                if self.proj_size:
                    yield projection_name(layer, direction), (state, self.hidden_size)

    def parameters(self):
        """See :meth:`Layer.parameters`; PyTorch's names, and edits to the arrays change the
        layer."""
        self._weights_version += 1     # the caller may write into them (see _current_stepper)
        return super().parameters()

    def load_state_dict(self, state_dict):
        """See :meth:`fastrnn.layers.base._LayerBase.load_state_dict`; the packed copies of the
        weights are made again at the next call.

        A layer with ``learn_initial_state=True`` also takes a ``state_dict`` without ``h0``
        and ``c0`` (a PyTorch module's, which has no such parameters): they then keep their
        values.
        """
        if self.learn_initial_state and hasattr(state_dict, "keys") and \
                not any(name in state_dict for name in INITIAL_STATE_NAMES):
            state_dict = {**state_dict, **{name: p for name, p in self._params.items()
                                           if name in INITIAL_STATE_NAMES}}
        super().load_state_dict(state_dict)
        self._weights_version += 1

    # ------------------------------------------------------------------ input checks

    @property
    def state_size(self):
        """Width of ``h`` (the outputs of each direction, ``h0`` and ``h_n``): ``proj_size``
        for an LSTM with a projection, else ``hidden_size`` (an LSTM's ``c`` always has
        ``hidden_size``)."""
        return self.proj_size or self.hidden_size

    def _state_shape(self, batch, c=False):
        """The shape of ``h`` (``c=True``: of an LSTM's ``c``) for a batch."""
        width = self.hidden_size if c else self.state_size
        return (self.num_layers * self.num_directions, batch, width)

    def _initial_state(self, batch):
        """``(h, c)``: zeros, or the learned initial state repeated over the batch (``c`` is
        None unless LSTM)."""
        if not self.learn_initial_state:
            return (np.zeros(self._state_shape(batch), self.dtype),
                    np.zeros(self._state_shape(batch, c=True), self.dtype) if self._has_c
                    else None)

        def repeat(name):
            shape = self._state_shape(batch, c=name == "c0")
            return np.ascontiguousarray(np.broadcast_to(self._params[name][:, None], shape))

        return repeat("h0"), (repeat("c0") if self._has_c else None)

    def _check_state(self, name, state, batch):
        """``(h, c)`` arrays from a user's state (``c`` is None unless LSTM); None gives the
        initial state (zeros, or the learned one)."""
        shape = self._state_shape(batch)
        if state is None:
            return self._initial_state(batch)
        if self._has_c:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"{name} must be a tuple (h, c) for an LSTM, got "
                                f"{type(state).__name__}")
            h = as_float_array(f"{name}[0] (h)", state[0], self.dtype, shape)
            c = as_float_array(f"{name}[1] (c)", state[1], self.dtype,
                               self._state_shape(batch, c=True))
            return h, c
        if isinstance(state, (tuple, list)):
            raise TypeError(f"{name} must be an array h of shape {shape}, got "
                            f"{type(state).__name__}")
        return as_float_array(name, state, self.dtype, shape), None

    def _pack_state(self, h, c):
        return (h, c) if self._has_c else h

    # ------------------------------------------------------------------ forward / backward

    def __call__(self, x, state=None, lengths=None, training=False, padding="post"):
        """Run the layer over a batch of sequences.

        Parameters
        ----------
        x : array_like, shape (batch, timesteps, input_size)
            Batch-first input; cast to the layer's dtype.
        state : optional
            Initial state: ``h`` (``(h, c)`` for an LSTM), each of shape
            ``(num_layers * num_directions, batch, hidden_size)``; None means zeros (or the
            learned initial state, with ``learn_initial_state=True``).
        lengths : array_like of int, shape (batch,), optional
            Valid timesteps of each sequence, each in ``0..timesteps``. Steps past a
            sequence's length are not computed: outputs there are 0 and the final state is
            the one at its last valid step. An empty sequence (length 0) has the initial
            state as its final state and 0 outputs.
        training : bool
            Keep what :meth:`backward` needs.
        padding : {"post", "pre"}
            Where the padding of a sequence shorter than ``timesteps`` is: after its valid
            steps (``"post"``, PyTorch's packed sequences) or before them (``"pre"``, the
            default of Keras' ``pad_sequences``). With ``"pre"`` the outputs are pre-padded
            too, and :meth:`backward` takes ``dy`` and returns ``dx`` pre-padded.

        Returns
        -------
        y : ndarray, shape (batch, timesteps, num_directions * hidden_size)
            Outputs of the last layer at every step.
        state : ndarray or tuple of ndarray
            Final state, shaped like ``state``.

        Notes
        -----
        Calls with ``training=False`` may run from any number of threads at once. A call with
        ``training=True`` makes the layer this thread's until :meth:`backward` succeeds: a
        training call from another thread meanwhile raises a RuntimeError (inference calls do
        not disturb it).
        """
        padding = check_choice("padding", padding, PADDINGS)
        x = as_float_array("x", x, self.dtype, (None, None, self.input_size))
        batch, timesteps, _ = x.shape
        lengths = as_lengths(lengths, batch, timesteps, allow_empty=True)
        h0, c0 = self._check_state("state", state, batch)
        pre = lengths if padding == "pre" else None
        if pre is not None:
            x = to_post_padding(x, pre)
        y, h_n, c_n = self._forward(x, h0, c0, lengths, check_bool("training", training),
                                    learned=state is None and self.learn_initial_state,
                                    pre_lengths=pre)
        if pre is not None:
            y = to_pre_padding(y, pre)
        return y, self._pack_state(h_n, c_n)

    @property
    def rng_state(self):
        """The state of the random generator that draws the dropout masks (a JSON-able dict);
        a saved model keeps it, so that training resumes with the masks it would have drawn.
        """
        return self._rng.bit_generator.state

    @rng_state.setter
    def rng_state(self, state):
        self._rng.bit_generator.state = state

    def _dropout_masks(self, batch, timesteps):
        """``{"layer_masks": ..., "recurrent_masks": ...}`` of one training call: fresh masks
        (zeros and ``1 / (1 - p)``) between the stacked layers and on ``h_{t-1}`` where
        ``W_hh`` reads it, one per sequence (None where the rate is 0)."""
        D, H = self.num_directions, self.state_size

        def draw(p, shape):
            return ((self._rng.random(shape) >= p) / (1.0 - p)).astype(self.dtype)

        layer = None
        if self.dropout > 0 and self.num_layers > 1:
            layer = [draw(self.dropout, (batch, timesteps, D * H))
                     for _ in range(self.num_layers - 1)]
        recurrent = None
        if self.recurrent_dropout > 0:
            recurrent = draw(self.recurrent_dropout, (self.num_layers * D, batch, H))
        return {"layer_masks": layer, "recurrent_masks": recurrent}

    def _forward(self, x, h0, c0, lengths, training, expose_y=True, learned=False,
                 pre_lengths=None):
        """The forward pass on validated, post-padded arrays: ``(y, h_n, c_n)``; ``expose_y``
        False when the caller does not pass ``y`` on, ``learned`` True when ``h0, c0`` are
        the learned initial state, ``pre_lengths`` the lengths of a pre-padded call.  A
        training call draws its dropout masks."""
        args = (self.cell, x, self._params, h0, c0, lengths)
        shape = {"num_layers": self.num_layers, "bidirectional": self.bidirectional}
        if training and (self.dropout > 0 or self.recurrent_dropout > 0):
            shape.update(self._dropout_masks(*x.shape[:2]))
        part = None
        if self.backend == "reference":
            y, h_n, c_n, saved = reference.forward(*args, **shape)
        elif lengths is not None and lengths.min() == 0:
            y, h_n, c_n, saved, part = self._forward_nonempty(x, h0, c0, lengths, training,
                                                              shape)
        else:
            packed = None if training else self._current_packing()
            y, h_n, c_n, saved = _compiled_engine().forward.forward(*args, **shape,
                                                                    training=training,
                                                                    packed=packed)
            if training and expose_y:
                y = y.copy()    # the workspace's y, which BPTT reads, stays out of reach
        if training:
            # what BPTT needs: the reference's cache, or the compiled forward's workspace
            self._keep_for_backward(_Cache(x, h0, c0, saved, part, learned, pre_lengths))
        return y, h_n, c_n

    def _forward_nonempty(self, x, h0, c0, lengths, training, shape):
        """The compiled forward of a batch with empty sequences (length 0): the engine runs
        the other rows, and the empty ones get their initial state as final state and 0
        outputs. ``(y, h_n, c_n, workspace, (rows, x, h0, c0 of the rows run))``."""
        rows = np.flatnonzero(lengths)
        y = np.zeros((*x.shape[:2], self.num_directions * self.state_size), self.dtype)
        h_n, c_n = h0.copy(), (None if c0 is None else c0.copy())
        if rows.size == 0:
            return y, h_n, c_n, None, (rows, None, None, None)
        x_r, h0_r, c0_r = x[rows], _take_rows(h0, rows), _take_rows(c0, rows)
        l_r = lengths[rows]
        shape = dict(shape)
        if shape.get("layer_masks") is not None:
            shape["layer_masks"] = [m[rows] for m in shape["layer_masks"]]
        if shape.get("recurrent_masks") is not None:
            shape["recurrent_masks"] = _take_rows(shape["recurrent_masks"], rows)
        packed = None if training else self._current_packing()
        y_r, h_r, c_r, saved = _compiled_engine().forward.forward(
            self.cell, x_r, self._params, h0_r, c0_r,
            None if l_r.min() == x.shape[1] else l_r, **shape, training=training, packed=packed)
        y[rows] = y_r
        h_n[:, rows] = h_r
        if c_n is not None:
            c_n[:, rows] = c_r
        return y, h_n, c_n, saved, (rows, x_r, h0_r, c0_r)

    def _backward_reads(self, cache):
        """What BPTT reads that the caller could edit: x, the initial state and the weight
        matrices (not the biases), by the name an error message gives them."""
        x, h0, c0 = cache.x, cache.h0, cache.c0
        state = {"state": h0} if c0 is None else {"state[0] (h)": h0, "state[1] (c)": c0}
        weights = {f"parameter {name!r}": p for name, p in self._params.items()
                   if name.startswith("weight")}
        return {"x": x, **state, **weights}

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

        Raises
        ------
        RuntimeError
            Without a call with ``training=True`` first, if that call was made in another
            thread, or if ``x``, the initial state or a weight matrix has been modified in place
            since (the gradients would be wrong; the biases and ``y`` do not matter).

        Notes
        -----
        Fills :attr:`grads` with the gradient of every parameter, keyed like
        :meth:`parameters`.
        """
        cache = self._training_cache("a forward call")
        batch, timesteps, _ = cache[0].shape
        y_shape = (batch, timesteps, self.num_directions * self.state_size)
        if dy is not None:
            dy = as_float_array("dy", dy, self.dtype, y_shape)
        dh_n, dc_n = self._check_dstate(dstate, batch)
        if dy is None and dh_n is None and dc_n is None:
            raise ValueError("backward() needs dy or dstate; both are None")
        pre = cache.pre_lengths
        if pre is not None and dy is not None:
            dy = to_post_padding(dy, pre)
        dx, dh0, dc0 = self._backward(cache, dy, dh_n, dc_n, bool(input_grad))
        if pre is not None and dx is not None:
            dx = to_pre_padding(dx, pre)
        return dx, self._pack_state(dh0, dc0)

    def _backward(self, cache, dy, dh_n, dc_n, input_grad=True):
        """BPTT of ``cache`` (from :meth:`_training_cache`) on validated arrays:
        ``(dx, dh0, dc0)`` (dx None unless ``input_grad``); fills :attr:`grads` and releases
        the layer."""
        if self.backend == "reference":
            dx, dh0, dc0, grads = reference.backward(cache.saved, dy, dh_n, dc_n)
            dx = dx if input_grad else None
        elif cache.part is None:
            from ..engine import bptt

            dx, dh0, dc0, grads = bptt.backward(self.cell, self._params, cache.saved, dy, dh_n,
                                                 dc_n, x=cache.x, h0=cache.h0, c0=cache.c0,
                                                 input_grad=input_grad)
        else:
            dx, dh0, dc0, grads = self._backward_nonempty(cache, dy, dh_n, dc_n, input_grad)
        if self.learn_initial_state:    # the initial state's gradient, summed over the batch
            for name, d in zip(INITIAL_STATE_NAMES, (dh0, dc0)):
                if name in self._params:
                    grads[name] = d.sum(axis=1) if cache.learned else \
                        np.zeros_like(self._params[name])
        self.grads = grads
        self._backward_done()
        return dx, dh0, dc0

    def _backward_nonempty(self, cache, dy, dh_n, dc_n, input_grad):
        """BPTT of :meth:`_forward_nonempty`: the empty rows pass their final state's gradient
        to the initial state and have 0 input gradients."""
        from ..engine import bptt

        rows, x_r, h0_r, c0_r = cache.part
        shape = self._state_shape(cache.x.shape[0])
        dh0 = np.zeros(shape, self.dtype) if dh_n is None else dh_n.copy()
        dc0 = None if cache.c0 is None else (
            np.zeros(self._state_shape(cache.x.shape[0], c=True), self.dtype) if dc_n is None
            else dc_n.copy())
        dx = np.zeros(cache.x.shape, self.dtype) if input_grad else None
        if rows.size == 0:
            grads = {name: np.zeros_like(p) for name, p in self._params.items()
                     if name not in INITIAL_STATE_NAMES}
            return dx, dh0, dc0, grads
        dx_r, dh0_r, dc0_r, grads = bptt.backward(
            self.cell, self._params, cache.saved,
            None if dy is None else np.ascontiguousarray(dy[rows]),
            _take_rows(dh_n, rows), _take_rows(dc_n, rows),
            x=x_r, h0=h0_r, c0=c0_r, input_grad=input_grad)
        if input_grad:
            dx[rows] = dx_r
        dh0[:, rows] = dh0_r
        if dc0 is not None:
            dc0[:, rows] = dc0_r
        return dx, dh0, dc0, grads

    def _check_dstate(self, dstate, batch):
        if dstate is None:
            return None, None
        shape = self._state_shape(batch)
        if self._has_c:
            if not isinstance(dstate, (tuple, list)) or len(dstate) != 2:
                raise TypeError(f"dstate must be a tuple (dh, dc) for an LSTM, got "
                                f"{type(dstate).__name__}")
            return tuple(
                None if d is None else as_float_array(f"dstate[{i}]", d, self.dtype,
                                                      self._state_shape(batch, c=i == 1))
                for i, d in enumerate(dstate)
            )
        return as_float_array("dstate", dstate, self.dtype, shape), None

    def step(self, x_t, state=None):
        """See :meth:`Layer.step`: ``x_t`` of shape ``(batch, input_size)``, ``y_t`` the last
        layer's output ``(batch, hidden_size)``, ``state`` as for :meth:`__call__`;
        unidirectional layers only.

        Notes
        -----
        ``y_t`` and the state are new arrays, independent of each other and of the inputs.
        The compiled backend prepares (packs) the weights once and reuses them from call to
        call while they hold the same values; an edit of the live arrays of
        :meth:`parameters` (or :meth:`load_state_dict`, training) makes the next call prepare
        them again. While an array of a :meth:`parameters` dict is alive outside the layer,
        each call compares the weights with what it packed (at batch 1 that costs about twice
        the step). A state this method returned is passed back without being checked again.

        Any number of threads may step one layer at once, each with its own state: the
        results are those of the same calls made one after the other.
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional layer; this one is bidirectional")
        x_t = self._check_step_input(x_t)
        batch = x_t.shape[0]
        if state is None and self.learn_initial_state:
            h0, c0 = self._initial_state(batch)
        elif state is None or (state is self._last_state and _state_batch(state) == batch):
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
            y_t, h_n, c_n = self._current_stepper().step(x_t, h0, c0)
        state = self._last_state = self._pack_state(h_n, c_n)
        return y_t, state

    def _current_stepper(self):
        """The compiled step's packed weights, packed again if the weights have changed.

        Comparing the weights with the copies the stepper packed reads every weight twice
        (about three small steps' worth), so it is skipped while nobody can have written them:
        if at the last comparison no array outside this layer referred to them (every NumPy
        array or buffer that can write an array refers to it: a view to its base), and there
        has been no :meth:`parameters` call (the only way to such references) or
        :meth:`load_state_dict` since. Writes through raw pointers are not seen.
        """
        version = self._weights_version     # read first: a later change shows as a new version
        stepper = self._stepper
        if stepper is not None and stepper.checked == version:
            return stepper
        alone = self._weights_alone()
        if stepper is None or not stepper.packed_from(self._params):
            stepper = _compiled_engine().stream.make_stepper(self.cell, self._params,
                                                             self.num_layers)
            self._stepper = stepper
        if alone:
            stepper.checked = version
        return stepper

    def _current_packing(self):
        """The compiled forward's packed weights for inference calls, or None.

        A forward call packs the weight matrices for the kernels; the engine's
        ``PackedWeights`` keeps them for the calls that follow, as long as nobody can have
        written the weights (see :meth:`_current_stepper`): a new one after a
        :meth:`parameters` or :meth:`load_state_dict` call, none at all while arrays outside
        this layer refer to the weights (each call then packs them itself, as before).  It
        costs one more copy of the weight matrices (per instruction set used).
        """
        version = self._weights_version     # read first: a later change shows as a new version
        packing = self._packing
        if packing is not None and packing.token == version:
            return packing
        if not self._weights_alone():
            return None
        packing = self._packing = _compiled_engine().forward.PackedWeights(version)
        return packing

    def _weights_alone(self):
        """True if no array outside this layer refers to its parameters (nothing can write
        them but the layer's own methods)."""
        return _references(self._params) == _ALONE * len(self._params)

    def _check_step_input(self, x_t):
        """``x_t`` validated; a fast path for a finite C-contiguous array of the layer's dtype."""
        if (type(x_t) is np.ndarray and x_t.dtype == self.dtype and x_t.ndim == 2
                and x_t.shape[1] == self.input_size and x_t.shape[0] > 0
                and x_t.flags.c_contiguous and math.isfinite(np.vdot(x_t, x_t))):
            return x_t      # a finite sum of squares means every element is finite
        return as_float_array("x_t", x_t, self.dtype, (None, self.input_size))

    def _unpack_state(self, state):
        return state if self._has_c else (state, None)

    # ------------------------------------------------------------------ in a model

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: ``(batch, timesteps, width)``, or ``(batch, width)``
        with ``return_sequences=False``, where ``width = num_directions * state_size``
        (``state_size``: ``proj_size`` for a projected LSTM, else ``hidden_size``)."""
        width = self.num_directions * self.state_size
        return (*input_shape[:2], width) if self.return_sequences else (input_shape[0], width)

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """See :meth:`Layer.model_forward`: ``x`` is ``(batch, timesteps, input_size)`` of the
        layer's dtype, ``state`` is ``h`` (``(h, c)`` for an LSTM), and ``y`` is the output
        sequence or, with ``return_sequences=False``, the output at each sequence's last valid
        step (see :meth:`output_shape`)."""
        if state is None:
            h0, c0 = self._initial_state(x.shape[0])
        else:
            h0, c0 = self._unpack_state(state)
        y, h_n, c_n = self._forward(x, h0, c0, lengths, training, self.return_sequences,
                                    learned=state is None and self.learn_initial_state)
        state_out = self._pack_state(h_n, c_n)
        if self.return_sequences:
            return y, state_out
        # the output at the last valid step: the last layer's final state of each direction
        return np.concatenate(list(h_n[-self.num_directions:]), axis=1), state_out

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`: ``dy`` is trusted (of the layer's dtype and shape;
        None means zeros), and for an LSTM ``dstate`` is ``(dh, dc)``, whose entries may be
        None."""
        cache = self._training_cache("a forward call")
        dh_n, dc_n = (None, None) if dstate is None else self._unpack_state(dstate)
        if not self.return_sequences:
            dh_last = self._last_step_grad(dy)
            dh_n = dh_last if dh_n is None else dh_last + dh_n
            dy = None
        dx, dh0, dc0 = self._backward(cache, dy, dh_n, dc_n, input_grad)
        return dx, self._pack_state(dh0, dc0)

    def final_state_grad(self, dy):
        """The gradient with respect to the final state that a gradient with respect to the
        output at each sequence's last valid step (``return_sequences=False``) amounts to.

        Parameters
        ----------
        dy : array_like, shape (batch, num_directions * state_size)

        Returns
        -------
        dstate : ndarray or tuple
            ``dh_n`` of shape ``(num_layers * num_directions, batch, state_size)`` (zero but
            in the last layer's rows), for an LSTM ``(dh_n, None)``: a ``dstate`` for
            :meth:`backward`.
        """
        dy = as_float_array("dy", dy, self.dtype, (None, self.num_directions * self.state_size))
        return self._pack_state(self._last_step_grad(dy), None)

    def _last_step_grad(self, dy):
        dh_n = np.zeros(self._state_shape(dy.shape[0]), self.dtype)
        for d in range(self.num_directions):
            dh_n[-self.num_directions + d] = dy[:, d * self.state_size:(d + 1) * self.state_size]
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
        if self.proj_size:
            extra += f", proj_size={self.proj_size}"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}{extra}, bias={self.bias}, "
                f"bidirectional={self.bidirectional}, dtype={self.dtype.name!r}, "
                f"backend={self.backend!r}"
                f"{', learn_initial_state=True' if self.learn_initial_state else ''})")


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
    learn_initial_state : bool
        Learn the initial state: parameters ``h0`` (and ``c0`` for an LSTM) of shape
        ``(num_layers * num_directions, hidden_size)``, zeros at first, repeated over the
        batch whenever a call's ``state`` is None, and trained by the gradient BPTT gives the
        initial state (a call with an explicit ``state`` gives them a zero gradient). They
        come after PyTorch's parameters in :meth:`parameters`, :meth:`state_dict`, saved
        models and parameter counts. PyTorch's modules have no such parameters: load this
        layer's ``state_dict()`` into one with ``strict=False`` (or without these two
        entries); :meth:`load_state_dict` takes a PyTorch ``state_dict`` and leaves them as
        they are.
    dropout : float
        Dropout between the stacked layers, in training calls only (PyTorch's ``dropout``):
        each element of every layer's output but the last is zeroed with this probability
        (the rest scaled by ``1 / (1 - dropout)``) before it feeds the next layer.
    recurrent_dropout : float
        Recurrent (variational) dropout, in training calls only (Keras'
        ``recurrent_dropout``; Gal and Ghahramani, 2016): ``W_hh`` reads ``h_{t-1}`` times a
        mask drawn once per sequence and call, the same at every step.  PyTorch's modules
        have no such option.
"""


class RNN(Recurrent):
    __doc__ = """Elman RNN: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.
    """ + _SIGNATURE_DOC + """    nonlinearity : {"tanh", "relu", "leaky_relu"}
        The activation ``act``; ``"leaky_relu"`` is ``a if a > 0 else 0.01 * a``
        (``fastrnn.cell_table.LEAKY_RELU_SLOPE``; PyTorch's ``nn.RNN`` has no such option).
    """

    _config_names = Recurrent._config_names + ("nonlinearity",)

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 bidirectional=False, dtype="float32", seed=None, backend=None,
                 return_sequences=True, learn_initial_state=False, dropout=0.0,
                 recurrent_dropout=0.0):
        self.nonlinearity = check_choice("nonlinearity", nonlinearity,
                                         ("tanh", "relu", "leaky_relu"))
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, num_layers, bias,
                         bidirectional, dtype, seed, backend, return_sequences,
                         learn_initial_state, dropout, recurrent_dropout)


class LSTM(Recurrent):
    __doc__ = """Long short-term memory, gates ``i, f, g, o`` in PyTorch's order.

    ``c_t = f * c_{t-1} + i * g`` and ``h_t = o * tanh(c_t)``; the state is the tuple ``(h, c)``.
    """ + _SIGNATURE_DOC + """    peepholes : bool
        Peephole connections (Gers and Schmidhuber, 2000; ONNX's ``P``, TensorFlow's
        ``use_peepholes``): the input and forget gates also read ``c_{t-1}``, the output gate
        ``c_t``, through diagonal weights ``weight_peephole_l{k}`` of shape
        ``(3 * hidden_size,)`` (``p_i, p_f, p_o``), one per layer and direction after its
        PyTorch parameters. PyTorch's LSTM has none: load this layer's ``state_dict()`` into
        one only without them.
    proj_size : int
        PyTorch's LSTM with projections (Sak et al., 2014), if > 0: ``h_t = (o * tanh(c_t))
        W_hr^T`` with ``weight_hr_l{k}`` of shape ``(proj_size, hidden_size)``, one per layer
        and direction after its PyTorch parameters (PyTorch's names, order and shapes), so
        ``h`` (the outputs, ``h0`` and ``h_n``) has ``proj_size`` units while ``c`` keeps
        ``hidden_size``; ``weight_hh_l{k}`` is ``(4 * hidden_size, proj_size)`` and a stacked
        layer reads ``num_directions * proj_size`` features.  0 (default): no projection;
        else ``0 < proj_size < hidden_size``.  Not with ``peepholes`` (PyTorch has none), and
        not exportable to ONNX (its LSTM operator has no projection).
    """

    _config_names = Recurrent._config_names + ("peepholes", "proj_size")

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False,
                 dtype="float32", seed=None, backend=None, return_sequences=True,
                 learn_initial_state=False, dropout=0.0, recurrent_dropout=0.0, peepholes=False,
                 proj_size=0):
        self.peepholes = check_bool("peepholes", peepholes)
        self.proj_size = check_int("proj_size", proj_size)
        if self.proj_size < 0:
            raise ValueError("proj_size must be 0 (no projection) or a positive integer, got "
                             f"{self.proj_size}")
        if self.proj_size and self.proj_size >= check_positive_int("hidden_size", hidden_size):
            raise ValueError(f"proj_size must be smaller than hidden_size, got proj_size="
                             f"{self.proj_size} and hidden_size={hidden_size}")
        if self.proj_size and self.peepholes:
            raise ValueError("an LSTM has peepholes or a projection (proj_size > 0), not "
                             "both: PyTorch's projected LSTM has no peepholes, and fastrnn "
                             "does not combine them")
        super().__init__("lstm_peephole" if self.peepholes else "lstm", input_size,
                         hidden_size, num_layers, bias, bidirectional, dtype, seed, backend,
                         return_sequences, learn_initial_state, dropout, recurrent_dropout)


class GRU(Recurrent):
    __doc__ = """Gated recurrent unit, gates ``r, z, n`` in PyTorch's order.

    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))`` and ``h_t = (1 - z) * n + z * h_{t-1}``.
    """ + _SIGNATURE_DOC + """    reset_after : bool
        True (PyTorch's GRU, and Keras' default): the reset gate multiplies
        ``h W_hn^T + b_hn``; False: the GRU of Cho et al. (2014), Keras' ``reset_after=False``
        and ONNX's default (``linear_before_reset=0``), whose reset gate multiplies ``h``
        before ``W_hn``: ``n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)``. The same
        parameters either way; PyTorch has only the first.
    """

    _config_names = Recurrent._config_names + ("reset_after",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False,
                 dtype="float32", seed=None, backend=None, return_sequences=True,
                 learn_initial_state=False, dropout=0.0, recurrent_dropout=0.0,
                 reset_after=True):
        self.reset_after = check_bool("reset_after", reset_after)
        super().__init__("gru" if self.reset_after else "gru_reset_before", input_size,
                         hidden_size, num_layers, bias, bidirectional, dtype, seed, backend,
                         return_sequences, learn_initial_state, dropout, recurrent_dropout)


