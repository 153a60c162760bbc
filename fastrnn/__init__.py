"""fastrnn: fast, exact recurrent neural networks (RNN, LSTM, GRU) on the CPU.

The layers :class:`RNN`, :class:`LSTM` and :class:`GRU` take batch-first input, keep PyTorch's
parameter names, shapes and gate order, and run on a compiled engine or on the readable NumPy
reference in :mod:`fastrnn.reference`. :class:`Sequential` and :class:`EncoderDecoder` (optionally with
Bahdanau's or Luong's attention, greedy or beam-search decoding) build models from them with
``fit`` / ``evaluate`` / ``predict`` / ``save``; :func:`load_model` reads
a saved model back. :class:`MultiHeadAttention`, :class:`PositionalEncoding`,
:class:`LayerNorm` and :class:`TransformerEncoderLayer` (PyTorch's parameters too) run
in a :class:`Sequential` next to them; :class:`GlobalAveragePooling1D` averages a sequence
over its valid steps for a classifier. :mod:`fastrnn.data` feeds ``fit`` with data larger than
memory: ragged sequence datasets, padded batches, bucketing by length, prefetching.
"""
from . import cell_table, engine  # noqa: F401  (engine first: its import warns if unbuilt)
from . import callbacks, data, diagnostics, init, losses, metrics, optim, reference, text
from .engine import get_num_threads, set_num_threads, show_config
from .layers import (GRU, LSTM, RNN, Dense, Dropout, Embedding, GlobalAveragePooling1D, LayerNorm,
                     MultiHeadAttention, PositionalEncoding, TransformerEncoderLayer)
from .models import EncoderDecoder, Sequential, load_model

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "RNN", "Dense", "Dropout", "Embedding", "EncoderDecoder",
    "GlobalAveragePooling1D", "LayerNorm",
    "MultiHeadAttention", "PositionalEncoding", "Sequential", "TransformerEncoderLayer",
    "callbacks", "data", "diagnostics", "get_num_threads", "init", "load_model", "losses", "metrics",
    "optim", "reference", "set_num_threads", "show_config", "text", "__version__",
]
