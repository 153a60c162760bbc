"""``Dense``, the fully connected layer, and the activations it applies."""
import numpy as np

from .._validation import (
    as_float_array,
    check_bool,
    check_choice,
    check_dtype,
    check_positive_int,
)
from ..engine import layer_ops
from .base import _LayerBase, uniform_params


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


class Dense(_LayerBase):
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

    _config_names = ("in_features", "out_features", "activation", "bias", "dtype")

    def __init__(self, in_features, out_features, activation=None, bias=True, dtype="float32",
                 seed=None):
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.bias = check_bool("bias", bias)
        self.dtype = check_dtype(dtype)
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        super().__init__(uniform_params(shapes.items(), 1.0 / np.sqrt(self.in_features),
                                        self.dtype, seed))

    def linear(self, x):
        """The pre-activation ``x W^T + b`` (the logits when the activation is dropped).

        Parameters
        ----------
        x : ndarray, shape (..., in_features)

        Returns
        -------
        ndarray, shape (..., out_features)
        """
        # one GEMM over every row, on the engine's threads (layer_ops.matmul)
        return layer_ops.linear(x, self._params["weight"],
                                self._params["bias"] if self.bias else None)

    def __call__(self, x, training=False):
        """Apply the layer to ``x`` of shape ``(..., in_features)``; keep a cache if training.

        Returns
        -------
        ndarray, shape ``(..., out_features)``
        """
        x = as_float_array("x", x, self.dtype, (..., self.in_features))
        return self._forward(x, check_bool("training", training))

    def _forward(self, x, training):
        y = ACTIVATIONS[self.activation][0](self.linear(x))
        if training:
            self._keep_for_backward((x, y))
            if self.activation is not None:
                y = y.copy()    # the y the derivative reads stays out of the caller's reach
        return y

    def _backward_reads(self, cache):
        return {"x": cache[0], "parameter 'weight'": self._params["weight"]}

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: ``input_shape`` with its last entry replaced by
        ``out_features``."""
        return (*input_shape[:-1], self.out_features)

    def model_forward(self, x, lengths=None, *, state=None, training=False, logits=False):
        """See :meth:`Layer.model_forward`; ``lengths`` is ignored (every timestep alike).

        Parameters
        ----------
        logits : bool
            Return the pre-activation :meth:`linear` (for a loss computed from logits);
            :meth:`model_backward` then skips the activation.
        """
        if logits:
            out = self.linear(x)
            if training:
                self._keep_for_backward((x, None))
            return out, None
        return self._forward(x, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`; ``dy`` is the gradient with respect to the
        pre-activation if the forward returned logits."""
        through_activation = self._cache is None or self._cache[1] is not None
        return self._backward(dy, through_activation, input_grad), None

    def step(self, x_t, state=None):
        """See :meth:`Layer.step`: :meth:`__call__` on ``x_t`` of shape
        ``(batch, in_features)``."""
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
        x, _ = self._training_cache()
        dy = as_float_array("dy", dy, self.dtype, (*x.shape[:-1], self.out_features))
        return self._backward(dy, through_activation, input_grad)

    def _backward(self, dy, through_activation, input_grad):
        """:meth:`backward` on a ``dy`` of the output's shape and dtype."""
        x, y = self._training_cache()
        da = ACTIVATIONS[self.activation][1](y, dy) if through_activation else dy
        x2 = x.reshape(-1, self.in_features)
        da2 = da.reshape(-1, self.out_features)
        self.grads = {"weight": layer_ops.matmul(da2, x2, trans_a=True)}
        if self.bias:
            self.grads["bias"] = da2.sum(axis=0)
        dx = (layer_ops.matmul(da2, self._params["weight"]).reshape(*da.shape[:-1], -1)
              if input_grad else None)
        self._backward_done()
        return dx

    def __repr__(self):
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r}, bias={self.bias})")
