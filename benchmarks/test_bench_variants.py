"""pytest-benchmark rows of the cell variants next to the plain cells they vary (issue 16).

PyTorch has neither the peephole LSTM (``LSTM(peepholes=True)``) nor the reset-before GRU
(``GRU(reset_after=False)``), so the peer here is ONNX Runtime running fastrnn's own export
(``fastrnn.onnx.export``: an LSTM node with ``P``, a GRU node with ``linear_before_reset=0``),
checked against fastrnn's outputs before timing. One benchmark group per kind of call, the
plain cell and its variant side by side:

* ``variants forward``: inference of a layer (B=64, T=50, I=128, H=128, F3's and F6's shape),
  fastrnn and ONNX Runtime;
* ``variants train``: one training step (forward with ``training=True``, backward of the summed
  output), fastrnn.

Run::

    pytest benchmarks/test_bench_variants.py --benchmark-only
"""
import warnings

import numpy as np
import pytest

fastrnn = pytest.importorskip("fastrnn")

B, T, I, H = 64, 50, 128, 128
#: cell name -> the layer
LAYERS = {
    "lstm": lambda: fastrnn.LSTM(I, H, seed=0),
    "lstm_peephole": lambda: fastrnn.LSTM(I, H, peepholes=True, seed=0),
    "gru": lambda: fastrnn.GRU(I, H, seed=0),
    "gru_reset_before": lambda: fastrnn.GRU(I, H, reset_after=False, seed=0),
}


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)


@pytest.mark.parametrize("cell", list(LAYERS))
def test_forward(benchmark, x, cell):
    layer = LAYERS[cell]()
    benchmark.group = "variants forward B=64 T=50 I=128 H=128"
    benchmark.name = f"fastrnn {cell}"
    benchmark(lambda: layer(x))


@pytest.mark.parametrize("cell", list(LAYERS))
def test_onnx_runtime_forward(benchmark, x, cell, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastrnn.onnx import export

    layer = LAYERS[cell]()
    with warnings.catch_warnings():     # (export's warning concerns OpenVINO, not ORT)
        warnings.simplefilter("ignore")
        export(layer, tmp_path / "m.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = fastrnn.get_num_threads()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], layer(x)[0], rtol=1e-4,
                               atol=1e-5)
    benchmark.group = "variants forward B=64 T=50 I=128 H=128"
    benchmark.name = f"onnxruntime {cell}"
    benchmark(lambda: session.run(["y"], {"x": x}))


@pytest.mark.parametrize("cell", list(LAYERS))
def test_train(benchmark, x, cell):
    layer = LAYERS[cell]()

    def step():
        y, _ = layer(x, training=True)
        layer.backward(np.ones_like(y))

    benchmark.group = "variants train B=64 T=50 I=128 H=128"
    benchmark.name = f"fastrnn {cell}"
    benchmark(step)
