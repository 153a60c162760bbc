"""Build script: compiles the Cython forward engine (``fastrnn._forward``).

Metadata lives in ``pyproject.toml``; this file only declares the extension, because it needs
NumPy's headers and OpenMP flags at build time.
"""
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32":
    openmp_compile, openmp_link = ["/openmp"], []
elif sys.platform == "darwin":
    openmp_compile, openmp_link = [], []
else:
    openmp_compile, openmp_link = ["-fopenmp"], ["-fopenmp"]

# The gate math and the small recurrent GEMM are compiled loops that need the machine's vector
# width (AVX2 / AVX-512) to keep up with oneDNN; BLAS dispatches at run time by itself.  Source
# builds therefore target the build machine; set FASTRNN_PORTABLE=1 for redistributable wheels.
native = []
if sys.platform != "win32" and not os.environ.get("FASTRNN_PORTABLE"):
    import platform

    if platform.machine().lower() in ("x86_64", "amd64"):
        native = ["-march=native", "-mprefer-vector-width=512"]
    elif platform.machine().lower() in ("aarch64", "arm64") and sys.platform != "darwin":
        native = ["-mcpu=native"]

extensions = [
    Extension(
        "fastrnn._forward",
        ["fastrnn/_forward.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=(["-O3"] + native + openmp_compile) if sys.platform != "win32" else openmp_compile,
        extra_link_args=openmp_link,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
