"""fastrnn: fast, exact recurrent neural networks (RNN, LSTM, GRU) on the CPU.

The layers :class:`RNN`, :class:`LSTM` and :class:`GRU` take batch-first input, keep PyTorch's
parameter names, shapes and gate order, and run on a compiled engine or on the readable NumPy
reference in :mod:`fastrnn.reference`.
"""
from . import reference
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = ["GRU", "LSTM", "RNN", "reference", "__version__"]
