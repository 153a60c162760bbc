"""``LayerNorm``: layer normalization over the last axis."""
import math

import numpy as np

from .._validation import as_float_array, check_bool, check_dtype, check_positive_int, check_real
from ..engine import layer_ops
from .base import _LayerBase, constant_params


class LayerNorm(_LayerBase):
    """Layer normalization over the last axis, as ``torch.nn.LayerNorm(normalized_shape)``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, with the mean and the (biased)
    variance of each vector of the last axis. Works on any shape ``(..., normalized_shape)``.

    Parameters
    ----------
    normalized_shape : int
        Features of the last axis.
    eps : float
        Added to the variance, > 0.
    elementwise_affine : bool
        Learn ``weight`` (initialised 1) and ``bias`` (initialised 0), each
        ``(normalized_shape,)``, PyTorch's names.
    bias : bool
        With ``elementwise_affine``, whether there is a ``bias``.
    dtype : {"float32", "float64"}

    Notes
    -----
    With the compiled engine, a call with ``training=True`` and its backward pass run on
    fused kernels (one pass over each row; the mean and variance summed in float64, the
    variance from the centred values), split over the engine's threads; other calls run on
    NumPy (the same formula, in the layer's dtype).
    """

    _config_names = ("normalized_shape", "eps", "elementwise_affine", "bias", "dtype")

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype="float32"):
        self.normalized_shape = check_positive_int("normalized_shape", normalized_shape)
        self.eps = check_real("eps", eps, 0.0, math.inf, low_open=True, high_open=True)
        self.elementwise_affine = check_bool("elementwise_affine", elementwise_affine)
        self.bias = check_bool("bias", bias)
        self.dtype = check_dtype(dtype)
        shape = (self.normalized_shape,)
        params = {}
        if self.elementwise_affine:
            params.update(constant_params([("weight", shape)], 1.0, self.dtype))
            if self.bias:
                params.update(constant_params([("bias", shape)], 0.0, self.dtype))
        super().__init__(params)

    def check_input(self, x, name="x"):
        """``x`` validated as :meth:`__call__` does.

        Parameters
        ----------
        x : array_like, shape (..., normalized_shape)
        name : str
            The argument's name in error messages.

        Returns
        -------
        ndarray
            C-contiguous, of the layer's dtype.
        """
        return as_float_array(name, x, self.dtype, (..., self.normalized_shape))

    def __call__(self, x, training=False):
        """Normalize ``x`` of shape ``(..., normalized_shape)``; keep a cache if ``training``.

        Returns
        -------
        ndarray, shape of ``x``
        """
        return self._forward(self.check_input(x), check_bool("training", training))

    def _forward(self, x, training, residual=None):
        """The normalized ``x`` (``x + residual`` if given: a residual connection's sum,
        computed in the same pass)."""
        if training and layer_ops.available():
            return self._forward_kernel(x, residual)
        if residual is not None:
            x = x + residual
        # on the rows of x as a matrix: the means as one matrix-vector product, the variances
        # as row dot products (einsum), and the rest in place: a few passes over x in all
        n = self.normalized_shape
        x2 = x.reshape(-1, n)
        xhat = x2 - (x2 @ self._mean_vector(x.dtype))[:, None]          # centred
        var = np.einsum("ij,ij->i", xhat, xhat)
        var *= 1.0 / n
        var += self.eps
        rstd = np.sqrt(var, out=var)
        np.reciprocal(rstd, out=rstd)
        rstd = rstd[:, None]
        xhat *= rstd
        if self.elementwise_affine:
            y = xhat * self._params["weight"]
            if self.bias:
                y += self._params["bias"]
        else:
            y = xhat.copy() if training else xhat   # backward's xhat out of the caller's reach
        if training:
            self._keep_for_backward((xhat, rstd, x.shape, False))   # xhat and rstd by rows
        return y.reshape(x.shape)

    def _affine(self, dtype):
        """``(weight, bias)`` as the kernels take them: ones and zeros where there are none."""
        n = self.normalized_shape
        weight = self._params["weight"] if self.elementwise_affine else np.ones(n, dtype)
        bias = self._params["bias"] if self.elementwise_affine and self.bias \
            else np.zeros(n, dtype)
        return weight, bias

    def _forward_kernel(self, x, residual):
        """:meth:`_forward` of a training call on the engine's kernels."""
        n = self.normalized_shape
        xhat, rstd, y = layer_ops.layer_norm_forward(
            x.reshape(-1, n), None if residual is None else residual.reshape(-1, n),
            *self._affine(x.dtype), self.eps)
        self._keep_for_backward((xhat, rstd, x.shape, True))
        return y.reshape(x.shape)

    def _mean_vector(self, dtype):
        """``(1/n, ..., 1/n)``: ``rows @ it`` is the rows' means."""
        return np.full(self.normalized_shape, 1.0 / self.normalized_shape, dtype)

    def _backward_reads(self, cache):
        return {"parameter 'weight'": self._params["weight"]} if self.elementwise_affine else {}

    def backward(self, dy):
        """Gradient with respect to the input of the last call with ``training=True``; fills
        :attr:`grads`.

        Parameters
        ----------
        dy : array_like
            Gradient with respect to the output, of its shape.

        Returns
        -------
        ndarray
        """
        shape = self._training_cache()[2]
        return self._backward(as_float_array("dy", dy, self.dtype, shape))

    def _backward(self, dy):
        """``dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))`` with ``dxhat = dy *
        weight``, the means over each row (as in :meth:`_forward`: a matrix-vector product and
        row dot products, the rest in place)."""
        xhat, rstd, _, kernel = self._training_cache()
        n = self.normalized_shape
        dy2 = dy.reshape(-1, n)
        self.grads = {}
        if kernel:
            dx, dweight, dbias = layer_ops.layer_norm_backward(dy2, xhat, rstd,
                                                               self._affine(dy.dtype)[0])
            if self.elementwise_affine:
                self.grads["weight"] = dweight
                if self.bias:
                    self.grads["bias"] = dbias
            self._backward_done()
            return dx.reshape(dy.shape)
        if self.elementwise_affine:
            self.grads["weight"] = np.einsum("ij,ij->j", dy2, xhat)
            if self.bias:
                self.grads["bias"] = dy2.sum(axis=0)
            dxhat = dy2 * self._params["weight"]
        else:
            dxhat = dy2.copy()
        mean = dxhat @ self._mean_vector(dxhat.dtype)
        projection = np.einsum("ij,ij->i", dxhat, xhat)
        projection *= 1.0 / n
        dxhat -= mean[:, None]
        dxhat -= xhat * projection[:, None]
        dxhat *= rstd
        self._backward_done()
        return dxhat.reshape(dy.shape)

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: the input shape."""
        return tuple(input_shape)

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """See :meth:`Layer.model_forward`; ``lengths`` is ignored (every timestep alike)."""
        return self._forward(x, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`."""
        dx = self._backward(dy)
        return (dx if input_grad else None), None

    def step(self, x_t, state=None):
        """See :meth:`Layer.step`: :meth:`__call__` on ``x_t`` ``(batch, normalized_shape)``."""
        return self(x_t), None

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias})")
