"""pytest-benchmark row D1: one epoch of ``fit`` from a :class:`fastrnn.data.Loader`, with random
batches against bucketed ones (:class:`fastrnn.data.BucketSampler`), on a skewed length
distribution: 512 sequences of lengths drawn from a log-normal (median 33) clipped to 5..400,
LSTM I=16 H=64 and a Dense head, batches of 32, Adam.

fastrnn computes no padding, so bucketing saves the work of a batch's longest sequences
against its shorter ones: fewer sequential timesteps per epoch and fuller GEMMs at each.

Run::

    pytest benchmarks/test_bench_data.py --benchmark-only
"""
import numpy as np
import pytest

N, FEATURES, HIDDEN, BATCH = 512, 16, 64, 32


@pytest.fixture(scope="module")
def dataset(fastrnn_backend):
    fastrnn, _ = fastrnn_backend
    from fastrnn.data import SequenceDataset

    rng = np.random.default_rng(0)
    lengths = np.clip(np.round(rng.lognormal(3.5, 0.9, size=N)), 5, 400).astype(int)
    seqs = [rng.standard_normal((n, FEATURES)).astype(np.float32) for n in lengths]
    return SequenceDataset(seqs, targets=rng.integers(0, 2, size=N))


@pytest.mark.parametrize("bucket", [None, 50], ids=["random", "bucketed"])
def test_fit_epoch(benchmark, fastrnn_backend, dataset, bucket):
    fastrnn, backend = fastrnn_backend
    from fastrnn.data import Loader

    loader = Loader(dataset, batch_size=BATCH, shuffle=True, bucket=bucket, seed=0)
    model = fastrnn.Sequential([
        fastrnn.LSTM(FEATURES, HIDDEN, return_sequences=False, seed=0, backend=backend),
        fastrnn.Dense(HIDDEN, 1, seed=1),
    ])
    model.fit(loader, loss="bce", optimizer="adam", epochs=1, verbose=0)   # warm-up (Numba)
    benchmark.group = "D1 fit epoch, lognormal lengths 5..400"
    benchmark.name = f"D1 {'bucketed' if bucket else 'random'} batches fastrnn[{backend}]"
    benchmark.extra_info.update(sequences=N, steps=int(dataset.lengths.sum()), batch=BATCH,
                                bucket=bucket)
    benchmark.pedantic(lambda: model.fit(loader, initial_epoch=0, epochs=1, verbose=0),
                       rounds=3, iterations=1)
