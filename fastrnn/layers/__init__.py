"""Layers: ``RNN``, ``LSTM`` and ``GRU``, ``Dense``, ``Embedding`` and ``Dropout`` around them,
and the attention layers ``MultiHeadAttention``, ``PositionalEncoding``, ``LayerNorm`` and
``TransformerEncoderLayer``, and ``GlobalAveragePooling1D``.

Every layer implements :class:`Layer`, the protocol through which models use layers. The
package is split by what each file holds:

- :mod:`~fastrnn.layers.base`: the :class:`Layer` protocol (documented there once), the choice
  of engine (``BACKENDS``) and what the layer classes share;
- :mod:`~fastrnn.layers.recurrent`: :class:`Recurrent` and ``RNN``, ``LSTM``, ``GRU``;
- :mod:`~fastrnn.layers.dense`: ``Dense`` and its ``ACTIVATIONS``;
- :mod:`~fastrnn.layers.embedding`: ``Embedding``;
- :mod:`~fastrnn.layers.dropout`: ``Dropout``;
- :mod:`~fastrnn.layers.attention`: ``MultiHeadAttention``, ``PositionalEncoding``, and
  ``CrossAttention`` (the attention of :class:`fastrnn.EncoderDecoder`, which takes two
  inputs and so is not a layer of a :class:`fastrnn.Sequential`);
- :mod:`~fastrnn.layers.normalization`: ``LayerNorm``;
- :mod:`~fastrnn.layers.transformer`: ``TransformerEncoderLayer``;
- :mod:`~fastrnn.layers.pooling`: ``GlobalAveragePooling1D``.
"""
from .attention import CrossAttention, MultiHeadAttention, PositionalEncoding
from .base import BACKENDS, Layer
from .dense import ACTIVATIONS, Dense
from .dropout import Dropout
from .embedding import Embedding
from .normalization import LayerNorm
from .pooling import GlobalAveragePooling1D
from .recurrent import (
           GRU,
           LSTM,
           RNN,
           Recurrent,
           _Recurrent,  # noqa: F401  (the former name of Recurrent)
)
from .transformer import TransformerEncoderLayer

__all__ = ["ACTIVATIONS", "BACKENDS", "CrossAttention", "GRU", "LSTM", "RNN", "Dense", "Dropout", "Embedding",
           "GlobalAveragePooling1D", "Layer", "LayerNorm", "MultiHeadAttention",
           "PositionalEncoding", "Recurrent", "TransformerEncoderLayer"]
