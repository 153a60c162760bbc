"""The compiled engine: forward, streaming and BPTT on C kernels chosen for this CPU.

Private package (the layers are its only users); its parts, top to bottom:

- :mod:`~fastrnn.engine.runtime`: threads, instruction set, ``show_config``;
- :mod:`~fastrnn.engine.plan`: the one planner (length order, batch and unit blocks, bias
  folding, how each call uses the threads);
- :mod:`~fastrnn.engine.forward`, :mod:`~fastrnn.engine.stream`, :mod:`~fastrnn.engine.gemm`,
  :mod:`~fastrnn.engine.bptt` (with its Numba kernels in ``bptt_kernels``, imported lazily):
  the drivers;
- ``_compiled``: the Cython extension (``_compiled.pyx`` and its ``_*.pxi`` parts) over the C
  kernels in ``kernels/``.

If the extension cannot be imported (a failed build), ``import fastrnn`` still works: this
package warns once, :data:`AVAILABLE` is False, and the layers run on the NumPy reference.
"""
import warnings

try:
    from . import _compiled
except ImportError as error:   # a broken or missing build: the reference still works
    _compiled = None
    IMPORT_ERROR = error
    warnings.warn(f"fastrnn: the compiled engine cannot be imported ({error}); every layer "
                  "runs on the NumPy reference engine (correct, but much slower). Reinstall "
                  "fastrnn to build it.", RuntimeWarning, stacklevel=2)
else:
    IMPORT_ERROR = None

#: True when the compiled engine is importable
AVAILABLE = _compiled is not None

from .runtime import (  # noqa: E402  (after the extension's import, which it needs)
    compiled_isas, config, cpu_model, get_num_threads, isa, set_num_threads, show_config,
    supported_isas, use_isa,
)

__all__ = ["AVAILABLE", "IMPORT_ERROR", "compiled_isas", "config", "cpu_model",
           "get_num_threads", "isa", "set_num_threads", "show_config", "supported_isas",
           "use_isa"]

from . import bptt, forward, gemm, plan, stream  # noqa: E402,F401  (the drivers)
