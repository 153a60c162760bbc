"""``Dropout``: inverted dropout between the other layers."""
import numpy as np

from .._validation import as_rng, check_bool, check_fraction
from .base import _LayerBase


class Dropout(_LayerBase):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the
    rest by ``1 / (1 - p)``; outside training, the identity.

    Parameters
    ----------
    p : float
        Probability of dropping an element, in ``[0, 1)``.
    seed : int, optional
    """

    _config_names = ("p",)

    def __init__(self, p=0.5, seed=None):
        self.p = float(check_fraction("p", p))
        self._rng = as_rng("seed", seed)
        super().__init__({})    # no parameters; the cache is (the last mask,), None: identity

    def __call__(self, x, training=False):
        """Apply dropout to ``x`` when ``training``; return ``x`` unchanged otherwise."""
        if not check_bool("training", training):
            return x
        self._trainer.claim()       # before drawing: a refused call leaves the masks alone
        mask = None
        if self.p != 0.0:
            keep = self._rng.random(np.shape(x)) >= self.p
            mask = keep.astype(np.asarray(x).dtype) / (1.0 - self.p)
        self._keep_for_backward((mask,))
        return x if mask is None else x * mask

    def backward(self, dy):
        """Gradient with respect to the input: the same mask applied to ``dy``.

        Parameters
        ----------
        dy : ndarray
            Gradient with respect to the output of the last call with ``training=True``.

        Returns
        -------
        ndarray
        """
        (mask,) = self._training_cache()
        self._backward_done()
        return dy if mask is None else dy * mask

    def output_shape(self, input_shape):
        """See :meth:`Layer.output_shape`: the input shape (dropout keeps shapes)."""
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
        """See :meth:`Layer.model_forward`: ``x`` with dropout applied when ``training``, else
        ``x`` itself; ``lengths`` is ignored."""
        return self(x, training), None

    def model_backward(self, dy, *, dstate=None, input_grad=True):
        """See :meth:`Layer.model_backward`: ``dy`` through the mask of the last forward."""
        dx = self.backward(dy)      # (releases the layer whatever input_grad says)
        return (dx if input_grad else None), None

    def step(self, x_t, state=None):
        """See :meth:`Layer.step`: outside training, ``x_t`` itself."""
        return x_t, None

    def __repr__(self):
        return f"Dropout(p={self.p})"
