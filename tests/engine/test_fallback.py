"""Without the compiled extension, ``import fastrnn`` works, warns once and runs on the
reference engine; the cell table agrees with the kernels' cell codes."""
import os
import subprocess
import sys

import fastrnn
from fastrnn import cell_table, engine

_WITHOUT_EXTENSION = r"""
import sys, warnings
import numpy as np

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "fastrnn.engine._compiled":
            raise ImportError("blocked by the test")
        return None

sys.meta_path.insert(0, Block())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastrnn
    import fastrnn.engine
messages = [str(w.message) for w in caught if "compiled engine cannot be imported" in str(w.message)]
assert len(messages) == 1, messages
assert not fastrnn.engine.AVAILABLE
layer = fastrnn.LSTM(3, 4, seed=0)
assert layer.backend == "reference", layer.backend
x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
y, _ = layer(x, training=True)
layer.backward(np.ones_like(y))
ref = fastrnn.LSTM(3, 4, seed=0, backend="reference")
np.testing.assert_array_equal(y, ref(x)[0])
try:
    fastrnn.GRU(3, 4, backend="compiled")
except ValueError as e:
    assert "not available" in str(e), e
else:
    raise AssertionError("backend='compiled' accepted without the extension")
fastrnn.set_num_threads(1)
assert fastrnn.show_config(mode="dicts")["isa"] is None
print("ok")
"""


def test_import_without_the_extension_falls_back_to_the_reference():
    package_root = os.path.dirname(os.path.dirname(fastrnn.__file__))
    env = dict(os.environ, PYTHONPATH=package_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", _WITHOUT_EXTENSION], capture_output=True,
                         text=True, env=env, cwd=os.path.dirname(package_root) or "/", timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


def test_cell_codes_agree_with_the_kernels():
    table = {name: spec.code for name, spec in cell_table.CELLS.items()}
    if engine.AVAILABLE:
        assert engine._compiled.CELL_CODES == table
        assert engine._compiled.LEAKY_RELU_SLOPE == cell_table.LEAKY_RELU_SLOPE
    assert [cell_table.CELLS[n].gates for n in ("rnn_tanh", "rnn_relu", "lstm", "gru")] == [1, 1, 4, 3]
    assert cell_table.CELLS["lstm"].gate_names == ("i", "f", "g", "o")
    assert cell_table.CELLS["gru"].gate_names == ("r", "z", "n")
    assert fastrnn.reference.GATES == {n: s.gates for n, s in cell_table.CELLS.items()}
