"""pytest-benchmark suite of the comparison's training rows (``compare.configs``: T1-T6, P2, and
the model rows A1, A2: a training step of a whole model through its ``fit``, see
``compare.model_contenders``).

One training step per call: forward with ``training=True``, backward of the summed output and a
plain SGD update of every parameter; PyTorch does the same (forward, ``out.sum().backward()``,
``optimizer.step()``) in the same benchmark group when it is installed.  Before timing, fastrnn's
gradients are checked against PyTorch's, as the comparison does.

Run::

    pytest benchmarks/test_bench_training.py --benchmark-only
    pytest benchmarks/test_bench_training.py --benchmark-only -k "T2"
"""
import pytest

from compare import configs

TRAIN = configs.TRAIN_CONFIGS
IDS = [c.name for c in TRAIN]


@pytest.mark.parametrize("cfg", TRAIN, ids=IDS)
def test_train(fastrnn_contender, timed, cfg):
    runner, info = fastrnn_contender(cfg)
    timed(cfg, runner, **info)


@pytest.mark.parametrize("cfg", TRAIN, ids=IDS)
def test_torch_train(torch_contender, timed, cfg):
    timed(cfg, torch_contender(cfg))
