"""The NumPy reference engine: forward unrolling and BPTT that read like the equations.

It defines what fastrnn computes. The compiled engine is tested against it, and it is checked
against central finite differences. Select it in a layer with ``backend="reference"``.
"""
from .cells import CELLS, GATES, sigmoid
from .network import ForwardCache, backward, forward, parameter_names, unroll, unroll_backward

__all__ = [
    "CELLS", "GATES", "ForwardCache", "backward", "forward", "parameter_names", "sigmoid",
    "unroll", "unroll_backward",
]
