"""``GlobalAveragePooling1D``: the mean of a sequence over its valid timesteps."""
import numpy as np

from .._validation import as_float_array, as_lengths, check_bool, check_dtype
from .base import _LayerBase


class GlobalAveragePooling1D(_LayerBase):
    """The mean over time of each sequence, over its valid steps only, as Keras's
    ``GlobalAveragePooling1D`` with a mask: ``y[b] = x[b, :lengths[b]].mean(axis=0)``.

    Turns ``(batch, timesteps, features)`` into ``(batch, features)``, e.g. between a
    ``TransformerEncoderLayer`` and the ``Dense`` that classifies the sequence. The padded
    steps have no effect on ``y`` and get a zero gradient. No parameters.

    Parameters
    ----------
    dtype : {"float32", "float64"}
    """

    _config_names = ("dtype",)

    def __init__(self, dtype="float32"):
        self.dtype = check_dtype(dtype)
        super().__init__({})     # no parameters; the cache is (weights (batch, timesteps, 1),
        #                          features)

    def check_input(self, x, name="x"):
        """``x`` validated as :meth:`__call__` does.

        Parameters
        ----------
        x : array_like, shape (batch, timesteps, features)
        name : str
            The argument's name in error messages.

        Returns
        -------
        ndarray
            C-contiguous, of the layer's dtype.
        """
        return as_float_array(name, x, self.dtype, (None, None, None))

    def __call__(self, x, lengths=None, training=False):
        """Average each sequence of ``x`` over its valid steps.

        Parameters
        ----------
        x : array_like, shape (batch, timesteps, features)
        lengths : array_like of int, shape (batch,), optional
            Valid steps of each sequence, each in ``1..timesteps`` (None: all).
        training : bool
            Keep what :meth:`backward` needs.

        Returns
        -------
        ndarray, shape (batch, features)
        """
        x = self.check_input(x)
        lengths = as_lengths(lengths, x.shape[0], x.shape[1])
        return self._forward(x, lengths, check_bool("training", training))

    def _forward(self, x, lengths, training):
        batch, timesteps = x.shape[0], x.shape[1]
        if lengths is None:
            lengths = np.full(batch, timesteps)
        valid = np.arange(timesteps) < lengths[:, None]
        weights = (valid / lengths[:, None]).astype(x.dtype)[:, :, None]
        if training:
            self._keep_for_backward((weights, x.shape[2]))
        return (x * weights).sum(axis=1)

    def backward(self, dy):
        """Gradient with respect to the input of the last call with ``training=True``.

        Parameters
        ----------
        dy : array_like, shape (batch, features)
            Gradient with respect to the output.

        Returns
        -------
        ndarray, shape (batch, timesteps, features)
            ``dy[b] / lengths[b]`` at the valid steps, 0 at the padded ones.
        """
        weights, features = self._training_cache()
        dy = as_float_array("dy", dy, self.dtype, (weights.shape[0], features))
        return self._backward(dy)

    def _backward(self, dy):
        weights, _ = self._training_cache()
        self.grads = {}
        dx = weights * dy[:, None, :]
        self._backward_done()
        return dx

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: ``(batch, features)``."""
        return (input_shape[0], input_shape[-1])

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """See :meth:`Layer.model_forward`: ``x`` is ``(batch, timesteps, features)``; the
        mean over the steps before each sequence's length."""
        return self._forward(x, lengths, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`."""
        dx = self._backward(dy)
        return (dx if input_grad else None), None

    def step(self, x_t, state=None):
        """Not supported: the mean needs the whole sequence (a TypeError)."""
        raise TypeError("GlobalAveragePooling1D cannot step: the mean over time needs the "
                        "whole sequence")

    def __repr__(self):
        return f"GlobalAveragePooling1D(dtype={self.dtype.name!r})"
