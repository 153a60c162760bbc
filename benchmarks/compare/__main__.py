"""``python -m benchmarks.compare`` (from the checkout's root) or ``python -m compare`` (with
``benchmarks/`` on the path): the side-by-side comparison."""
import sys

from .cli import main

sys.exit(main())
