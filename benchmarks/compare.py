#!/usr/bin/env python
"""Side-by-side comparison of fastrnn with PyTorch and ONNX Runtime: ``fastrnn.bench``.

``python benchmarks/compare.py [args]`` is ``fastrnn bench [args]`` (see ``--help``); the code
lives in the package so that an installed fastrnn can re-run its own speed claims.
"""
import sys

from fastrnn.bench import main

if __name__ == "__main__":
    sys.exit(main())
