"""Build script: compiles the Cython forward engine (``fastrnn._forward``).

Metadata lives in ``pyproject.toml``; this file only declares the extension, because it needs
NumPy's headers and OpenMP flags at build time.
"""
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

extensions = [
    Extension(
        "fastrnn._forward",
        ["fastrnn/_forward.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] + openmp_compile if sys.platform != "win32" else openmp_compile,
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
