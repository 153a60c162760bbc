"""pytest-benchmark suite for the training configurations of ``fastrnn.bench`` (T1-T6, P2).

One training step per call: forward with ``training=True``, backward of the summed output and a
plain SGD update of every parameter; PyTorch does the same (forward, ``out.sum().backward()``,
``optimizer.step()``) in the same benchmark group when it is installed.  Before timing, each
contender's gradients are checked against PyTorch's (else skipped), as ``compare.py`` does.

Run::

    pytest benchmarks/test_bench_training.py --benchmark-only
    pytest benchmarks/test_bench_training.py --benchmark-only -k "T2"
"""
import numpy as np
import pytest

from fastrnn import bench as compare

TRAIN = compare.TRAIN_CONFIGS


def _ids(configs):
    return [c.name for c in configs]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _fastrnn_runner(fastrnn_backend, cfg):
    fastrnn, backend = fastrnn_backend
    if backend == "reference" and not cfg.small:
        pytest.skip(f"{cfg.name}: too slow for the NumPy reference (no compiled backend)")
    ok, reason = compare.fastrnn_can_train(fastrnn, backend)
    if not ok:
        pytest.skip(reason)
    return compare.fastrnn_runner(fastrnn, cfg, backend, compare.make_weights(cfg),
                                  f"fastrnn[{backend}]"), backend


@pytest.mark.parametrize("cfg", TRAIN, ids=_ids(TRAIN))
def test_train(benchmark, fastrnn_backend, kernels, cfg):
    runner, backend = _fastrnn_runner(fastrnn_backend, cfg)
    got = runner.check()
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:       # same gradients as PyTorch before any timing
        want = compare.torch_runner(torch, cfg, compare.make_weights(cfg)).check()
        err = compare.compare_outputs(got, want)
        assert err is None, err
    assert all(np.all(np.isfinite(v)) for v in got.values())
    benchmark.group = cfg.name
    benchmark.name = f"{cfg.name} fastrnn[{backend}{' ' + kernels if kernels else ''}]"
    benchmark.extra_info.update(config=cfg.describe(), flops=cfg.flops(), backend=backend,
                                kernels=kernels)
    benchmark(runner.run)


@pytest.mark.parametrize("cfg", TRAIN, ids=_ids(TRAIN))
def test_torch_train(benchmark, torch, cfg):
    runner = compare.torch_runner(torch, cfg, compare.make_weights(cfg))
    benchmark.group = cfg.name
    benchmark.name = f"{cfg.name} torch"
    benchmark.extra_info.update(config=cfg.describe(), flops=cfg.flops())
    benchmark(runner.run)
