"""pytest-benchmark rows of the cell variants next to the plain cells they vary (issue 16).

PyTorch has neither the peephole LSTM (``LSTM(peepholes=True)``) nor the reset-before GRU
(``GRU(reset_after=False)``), so the peer for those is ONNX Runtime running fastrnn's own export
(``fastrnn.onnx.export``: an LSTM node with ``P``, a GRU node with ``linear_before_reset=0``),
checked against fastrnn's outputs before timing. ONNX's LSTM has no projection, so the
projected LSTM (``LSTM(proj_size=64)``, PyTorch's ``proj_size``) has PyTorch as its peer
(``torch.nn.LSTM(proj_size=64)`` on the same weights, checked equal first, on fastrnn's number
of threads). One benchmark group per kind of call, the plain cell and its variants side by
side:

* ``variants forward``: inference of a layer (B=64, T=50, I=128, H=128, F3's and F6's shape),
  fastrnn, ONNX Runtime (not the projected LSTM) and PyTorch (the projected LSTM);
* ``variants train``: one training step (forward with ``training=True``, backward of the summed
  output), fastrnn, and PyTorch for the projected LSTM.

Run::

    pytest benchmarks/test_bench_variants.py --benchmark-only
"""
import warnings

import numpy as np
import pytest

fastrnn = pytest.importorskip("fastrnn")

B, T, I, H = 64, 50, 128, 128
#: the projected LSTM's proj_size
P = 64
#: cell name -> the layer
LAYERS = {
    "lstm": lambda: fastrnn.LSTM(I, H, seed=0),
    "lstm_peephole": lambda: fastrnn.LSTM(I, H, peepholes=True, seed=0),
    "lstm_proj": lambda: fastrnn.LSTM(I, H, proj_size=P, seed=0),
    "gru": lambda: fastrnn.GRU(I, H, seed=0),
    "gru_reset_before": lambda: fastrnn.GRU(I, H, reset_after=False, seed=0),
}
#: the variants ONNX cannot express (their peer is PyTorch)
NOT_ONNX = {"lstm_proj"}


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)


@pytest.mark.parametrize("cell", list(LAYERS))
def test_forward(benchmark, x, cell):
    layer = LAYERS[cell]()
    benchmark.group = "variants forward B=64 T=50 I=128 H=128"
    benchmark.name = f"fastrnn {cell}"
    benchmark(lambda: layer(x))


@pytest.mark.parametrize("cell", [c for c in LAYERS if c not in NOT_ONNX])
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


def _torch_projected(x):
    """``(layer, module, x as a tensor)``: fastrnn's projected LSTM and PyTorch's on the same
    weights, on fastrnn's number of threads, checked equal."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(fastrnn.get_num_threads())
    layer = LAYERS["lstm_proj"]()
    module = torch.nn.LSTM(I, H, proj_size=P, batch_first=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x_t = torch.from_numpy(x)
    with torch.no_grad():
        np.testing.assert_allclose(module(x_t)[0].numpy(), layer(x)[0], rtol=1e-4, atol=1e-5)
    return layer, module, x_t


def test_torch_forward_projected(benchmark, x):
    torch = pytest.importorskip("torch")
    _, module, x_t = _torch_projected(x)

    def call():
        with torch.no_grad():
            module(x_t)

    benchmark.group = "variants forward B=64 T=50 I=128 H=128"
    benchmark.name = "torch lstm_proj"
    benchmark(call)


def test_torch_train_projected(benchmark, x):
    _, module, x_t = _torch_projected(x)

    def step():
        module.zero_grad()
        module(x_t)[0].sum().backward()

    benchmark.group = "variants train B=64 T=50 I=128 H=128"
    benchmark.name = "torch lstm_proj"
    benchmark(step)
