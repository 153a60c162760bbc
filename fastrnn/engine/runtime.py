"""What the engine runs on: its thread count, the instruction set of its kernels, its
configuration (:func:`show_config`).

These work whether or not the compiled engine could be imported (without it, the instruction
set is None and everything runs on the NumPy reference).
"""
import contextlib
import importlib.metadata
import os
import platform

import numpy as np

from . import _compiled   # None when the extension could not be imported (see __init__)

__all__ = ["set_num_threads", "get_num_threads", "isa", "compiled_isas", "supported_isas",
           "use_isa", "cpu_model", "config", "show_config"]

# ----------------------------------------------------------------------------------------------
# threads
# ----------------------------------------------------------------------------------------------

_num_threads = max(1, min(os.cpu_count() or 1,
                          _compiled.max_threads() if _compiled else os.cpu_count() or 1))
if _compiled:
    _compiled.set_threads(_num_threads)


def set_num_threads(n):
    """Set the number of threads the engine uses.

    The work of a call is split for ``n`` threads: results are the same to the bit for the
    same ``n`` whatever the machine's load (while another process competes for the cores, the
    engine runs the same split on one thread); another ``n`` may change their last bits.

    Parameters
    ----------
    n : int
        At least 1.
    """
    global _num_threads
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = n
    if _compiled:
        _compiled.set_threads(n)


def get_num_threads():
    """Number of threads the engine uses (default: the CPU count)."""
    return _num_threads


# ----------------------------------------------------------------------------------------------
# instruction sets
# ----------------------------------------------------------------------------------------------

def isa():
    """Name of the instruction set whose kernels are in use (None without the compiled
    engine)."""
    return _compiled.isa() if _compiled else None


def compiled_isas():
    """Names of the instruction sets compiled into this build, best first."""
    return _compiled.compiled_isas() if _compiled else []


def supported_isas():
    """The compiled instruction sets that this CPU can run, best first."""
    return _compiled.supported_isas() if _compiled else []


def _select_isa_from_environment():
    """Honour ``FASTRNN_ISA`` (at import): a clear error for a name this build or this CPU
    cannot run, never an illegal instruction."""
    want = os.environ.get("FASTRNN_ISA", "").strip().lower()
    if not want or want in ("auto", "best") or not _compiled:
        return
    if want not in compiled_isas():
        raise ValueError(f"FASTRNN_ISA={want!r}: not an instruction set of this build "
                         f"(it has: {', '.join(compiled_isas())}; or 'auto')")
    if want not in supported_isas():
        raise ValueError(f"FASTRNN_ISA={want!r}: this CPU cannot run it (it can run: "
                         f"{', '.join(supported_isas())})")
    _compiled.set_isa(want)


_select_isa_from_environment()


@contextlib.contextmanager
def use_isa(name):
    """Run the engine on the kernels of instruction set ``name`` inside the block (for tests and
    benchmarks; not while another thread runs the engine)."""
    old = _compiled.isa()
    _compiled.set_isa(name)
    try:
        yield
    finally:
        _compiled.set_isa(old)


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------

def cpu_model():
    """The CPU's model name as the OS reports it (``/proc/cpuinfo`` on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def config():
    """What the engine runs on, as a dict (see :func:`show_config`)."""
    from .. import __version__

    info = _compiled.isa_info() if _compiled else None
    return {
        "fastrnn": __version__,
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "compiled_engine": "available" if _compiled else "not available: reference only",
        "isa": isa(),
        "isa_forced": os.environ.get("FASTRNN_ISA") or None,
        "compiled_isas": compiled_isas(),
        "supported_isas": supported_isas(),
        "register_tile": (f"{info['tile_rows']} rows x {info['tile_vectors']} vectors of "
                          f"{info['vector_bytes']} bytes") if info else None,
        "panel_width": ({"float32": info["panel_width_float32"],
                         "float64": info["panel_width_float64"]}) if info else None,
        "threads": get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": _version("numba"),
    }


def show_config(mode="stdout"):
    """Print (``mode="stdout"``) or return (``mode="dicts"``) the engine's configuration.

    In the spirit of ``numpy.show_config()``: whether the compiled engine is available, the
    instruction set whose kernels are in use (and whether ``FASTRNN_ISA`` forced it), the sets
    compiled into this build and those this CPU can run, the register tile, the engine's
    thread count and the versions that matter.

    Parameters
    ----------
    mode : {"stdout", "dicts"}
        Print a readable summary, or return it as a dict.
    """
    info = config()
    if mode == "dicts":
        return info
    if mode != "stdout":
        raise ValueError(f"show_config: mode must be 'stdout' or 'dicts', got {mode!r}")
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"{key:<{width}}  {value if value is not None else '-'}")
    return None
