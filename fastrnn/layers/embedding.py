"""``Embedding``: the lookup table from integer tokens to vectors."""
import math

import numpy as np

from .._validation import (
    as_rng,
    as_token_ids,
    check_bool,
    check_dtype,
    check_index,
    check_positive_int,
)
from .base import _LayerBase, claim_parameter_bytes


class Embedding(_LayerBase):
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

    _config_names = ("num_embeddings", "embedding_dim", "padding_idx", "dtype")

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype="float32",
                 seed=None):
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        if padding_idx is not None:
            padding_idx = check_index("padding_idx", padding_idx, self.num_embeddings)
        self.padding_idx = padding_idx
        self.dtype = check_dtype(dtype)
        shape = (self.num_embeddings, self.embedding_dim)
        claim_parameter_bytes(math.prod(shape) * self.dtype.itemsize)
        weight = as_rng("seed", seed).standard_normal(shape).astype(self.dtype)
        if padding_idx is not None:
            weight[padding_idx] = 0
        super().__init__({"weight": weight})

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
        return as_token_ids(name, tokens, self.num_embeddings)

    def __call__(self, tokens, training=False):
        """Vectors of ``tokens`` (any integer shape): shape ``tokens.shape + (embedding_dim,)``."""
        return self._forward(self.check_tokens(tokens), check_bool("training", training))

    def _forward(self, tokens, training):
        if training:
            self._keep_for_backward(tokens)
        return self._params["weight"][tokens]

    def _backward_reads(self, cache):
        return {"x": cache}

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: ``input_shape + (embedding_dim,)``."""
        return (*input_shape, self.embedding_dim)

    def model_forward(self, x, lengths=None, *, state=None, training=False):
        """See :meth:`Layer.model_forward`: ``x`` is token ids validated with
        :meth:`check_tokens`; ``lengths`` is ignored (padding tokens look up the padding
        vector)."""
        return self._forward(x, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`: :meth:`backward`; ``dx`` is None (tokens have no
        gradient) whatever ``input_grad`` says."""
        return self.backward(dy), None

    def step(self, x_t, state=None):
        """See :meth:`Layer.step`: the vectors ``(batch, embedding_dim)`` of one timestep of
        tokens ``x_t`` (shape ``(batch,)``)."""
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
        tokens = self._training_cache()
        grad = np.zeros_like(self._params["weight"])
        np.add.at(grad, tokens.ravel(), dy.reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        self.grads = {"weight": grad}
        self._backward_done()

    def __repr__(self):
        return (f"Embedding({self.num_embeddings}, {self.embedding_dim}, "
                f"padding_idx={self.padding_idx})")
