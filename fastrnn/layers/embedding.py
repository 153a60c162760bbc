"""``Embedding``: the lookup table from integer tokens to vectors."""
import math

import numpy as np

from .._masks import PADDINGS, lengths_from_tokens
from .._validation import (
    as_rng,
    as_token_ids,
    check_bool,
    check_choice,
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
    mask_zero : bool
        Token 0 is padding, as in Keras: a :class:`~fastrnn.Sequential` that starts with this
        layer and is called without ``lengths`` computes them from the tokens
        (:meth:`compute_lengths`), so that the padding is never run. fastrnn works with
        lengths rather than a mask per step, so the zeros of a sequence must all be at its
        end (or, with ``padding="pre"``, at its start); a 0 between non-zero tokens is an
        error. The padding token of ``padding_idx``, if given, must then be 0 too.
    """

    _config_names = ("num_embeddings", "embedding_dim", "padding_idx", "dtype", "mask_zero")

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype="float32",
                 seed=None, mask_zero=False):
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.mask_zero = check_bool("mask_zero", mask_zero)
        if padding_idx is not None:
            padding_idx = check_index("padding_idx", padding_idx, self.num_embeddings)
            if self.mask_zero and padding_idx != 0:
                raise ValueError(f"padding_idx must be 0 or None with mask_zero=True (token 0 "
                                 f"is the padding), got {padding_idx}")
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

    def compute_lengths(self, tokens, padding="post", name="x"):
        """The lengths of a batch of token sequences padded with 0 (``mask_zero=True``).

        Parameters
        ----------
        tokens : array_like of int, shape (batch, timesteps)
        padding : {"post", "pre"}
            Whether the padding zeros are at the end of each row or at its start.
        name : str
            The argument's name in error messages.

        Returns
        -------
        ndarray of int64, shape (batch,)
            The number of non-zero tokens of each row (0 for a row of padding only).

        Raises
        ------
        ValueError
            If the layer does not have ``mask_zero=True``, or a row has a 0 between non-zero
            tokens (the message names the row and the step).

        Examples
        --------
        >>> import fastrnn
        >>> emb = fastrnn.Embedding(10, 4, mask_zero=True)
        >>> emb.compute_lengths([[3, 1, 0, 0], [5, 0, 0, 0]]).tolist()
        [2, 1]
        >>> emb.compute_lengths([[0, 0, 3, 1]], padding="pre").tolist()
        [2]
        """
        if not self.mask_zero:
            raise ValueError("compute_lengths() needs an Embedding with mask_zero=True")
        padding = check_choice("padding", padding, PADDINGS)
        tokens = self.check_tokens(tokens, name)
        if tokens.ndim != 2:
            raise ValueError(f"{name} must have shape (batch, timesteps), got {tokens.shape}")
        return lengths_from_tokens(tokens, padding, name)

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
                f"padding_idx={self.padding_idx}"
                f"{', mask_zero=True' if self.mask_zero else ''})")
