"""pytest-benchmark suite for the forward configurations of ``fastrnn.bench``.

Run::

    pytest benchmarks/ --benchmark-only                      # timings, grouped by configuration
    pytest benchmarks/ --benchmark-disable -q                # smoke test: every benchmark runs once
    pytest benchmarks/ --benchmark-only -k "S1 or F1"        # a few configurations

fastrnn uses the compiled backend when it works, else the NumPy reference on the small
configurations only (``FASTRNN_BENCH_BACKEND`` forces one; see conftest.py).  When PyTorch is
installed the same configurations also run through ``torch.nn`` in the same benchmark group
(one group per configuration), so pytest-benchmark's table shows them side by side.
"""
import numpy as np
import pytest

from fastrnn import bench as compare

FORWARD = compare.FORWARD_CONFIGS + compare.PACKED_CONFIGS
STREAM = compare.STREAM_CONFIGS


def _ids(configs):
    return [c.name for c in configs]


def _skip_if_slow(cfg, backend):
    if backend == "reference" and not cfg.small:
        pytest.skip(f"{cfg.name}: too slow for the NumPy reference (no compiled backend)")


def _fastrnn_layer(fastrnn_backend, cfg):
    fastrnn, backend = fastrnn_backend
    _skip_if_slow(cfg, backend)
    try:
        return compare.fastrnn_layer(fastrnn, cfg, backend, compare.make_weights(cfg)), backend
    except compare.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("cfg", FORWARD, ids=_ids(FORWARD))
def test_forward(benchmark, fastrnn_backend, kernels, cfg):
    layer, backend = _fastrnn_layer(fastrnn_backend, cfg)
    x = compare.make_input(cfg)
    lengths = cfg.lengths()
    benchmark.group = cfg.name
    benchmark.name = f"{cfg.name} fastrnn[{backend}{' ' + kernels if kernels else ''}]"
    benchmark.extra_info.update(config=cfg.describe(), flops=cfg.flops(), backend=backend,
                                kernels=kernels)
    y, state = benchmark(layer, x, lengths=lengths)
    assert y.shape == (cfg.B, cfg.T, cfg.H)
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("cfg", STREAM, ids=_ids(STREAM))
def test_stream(benchmark, fastrnn_backend, kernels, cfg):
    layer, backend = _fastrnn_layer(fastrnn_backend, cfg)
    x = compare.make_input(cfg)  # (1, I)
    holder = [None]

    def step():
        y, holder[0] = layer.step(x, holder[0])
        return y

    benchmark.group = cfg.name
    benchmark.name = f"{cfg.name} fastrnn[{backend}{' ' + kernels if kernels else ''}]"
    benchmark.extra_info.update(config=cfg.describe(), flops=cfg.flops(), backend=backend,
                                kernels=kernels)
    y = benchmark(step)
    assert y.shape == (1, cfg.H)
    assert np.all(np.isfinite(y))


# ------------------------------------------------------------------ PyTorch, side by side


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("cfg", FORWARD + STREAM, ids=_ids(FORWARD + STREAM))
def test_torch(benchmark, torch, cfg):
    runner = compare.torch_runner(torch, cfg, compare.make_weights(cfg))
    benchmark.group = cfg.name
    benchmark.name = f"{cfg.name} torch"
    benchmark.extra_info.update(config=cfg.describe(), flops=cfg.flops())
    with torch.inference_mode():
        benchmark(runner.run)
