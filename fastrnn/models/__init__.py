"""Models: a stack of layers trained with ``fit`` and used with ``evaluate`` / ``predict``.

:class:`Sequential` chains layers; :class:`EncoderDecoder` is a sequence-to-sequence model;
:func:`load_model` reads a saved model back. The package is split by concern:

- :mod:`~fastrnn.models.sequential`: :class:`Sequential` (and :class:`Trace`, what its
  ``trace`` records), ``LAYER_CLASSES``;
- :mod:`~fastrnn.models.training`: what the models share (``_Model``: parameters, ``save``,
  the summary table, the training loop), truncated BPTT, :class:`History`;
- :mod:`~fastrnn.models.saving`: ``save_model`` / :func:`load_model`;
- :mod:`~fastrnn.models.seq2seq`: :class:`EncoderDecoder` (with or without attention).

Models use their layers only through the layer protocol :class:`fastrnn.layers.Layer`.
"""
from .saving import load_model, save_model
from .seq2seq import EncoderDecoder
from .sequential import LAYER_CLASSES, Sequential, Trace
from .training import History, train_truncated

__all__ = ["EncoderDecoder", "History", "LAYER_CLASSES", "Sequential", "Trace", "load_model",
           "save_model", "train_truncated"]
