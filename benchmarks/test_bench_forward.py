"""pytest-benchmark suite of the comparison's inference rows (``compare.configs``: F1-F8, P1,
P1pad, S1-S3), with the comparison's contenders.

Run::

    pytest benchmarks/ --benchmark-only                      # timings, grouped by configuration
    pytest benchmarks/ --benchmark-disable -q                # smoke test: every benchmark runs once
    pytest benchmarks/ --benchmark-only -k "S1 or F1"        # a few configurations

fastrnn uses the compiled backend when it works, else the NumPy reference on the small
configurations only (``FASTRNN_BENCH_BACKEND`` forces one; see conftest.py), its outputs checked
against PyTorch's before timing.  When PyTorch is installed the same configurations also run
through ``torch.nn`` in the same benchmark group (one group per configuration), so
pytest-benchmark's table shows them side by side.
"""
import pytest

from compare import configs

FORWARD = configs.FORWARD_CONFIGS + configs.PACKED_CONFIGS
STREAM = configs.STREAM_CONFIGS


def _ids(rows):
    return [c.name for c in rows]


@pytest.mark.parametrize("cfg", FORWARD, ids=_ids(FORWARD))
def test_forward(fastrnn_contender, timed, cfg):
    runner, info = fastrnn_contender(cfg)
    y, _ = timed(cfg, runner, **info)
    assert y.shape == (cfg.B, cfg.T, cfg.H)


@pytest.mark.parametrize("cfg", STREAM, ids=_ids(STREAM))
def test_stream(fastrnn_contender, timed, cfg):
    runner, info = fastrnn_contender(cfg)
    y = timed(cfg, runner, **info)
    assert y.shape == (1, cfg.H)


@pytest.mark.parametrize("cfg", FORWARD + STREAM, ids=_ids(FORWARD + STREAM))
def test_torch(torch_contender, timed, cfg):
    timed(cfg, torch_contender(cfg))
