"""fastrnn.dask: predict over Dask arrays and bags equals model.predict on the whole data, on
the synchronous scheduler and on a 2-worker distributed.LocalCluster (skipped without Dask)."""
import numpy as np
import pytest

import fastrnn

da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")
fdask = pytest.importorskip("fastrnn.dask")


def _model(return_sequences=False):
    return fastrnn.Sequential([fastrnn.LSTM(3, 16, seed=0, return_sequences=return_sequences),
                               fastrnn.Dense(16, 2, seed=1)])


def _data(n=50, T=12):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, T, 3)).astype(np.float32)
    lengths = rng.integers(0, T + 1, n)
    return X, lengths


@pytest.fixture(scope="module")
def client():
    """A short-lived 2-process cluster, one thread each (closed after this module)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.mark.parametrize("return_sequences", [False, True])
def test_array_equals_predict_sync(return_sequences):
    model = _model(return_sequences)
    X, lengths = _data()
    want = model.predict(X, lengths)
    got = fdask.predict(model, da.from_array(X, chunks=(16, -1, -1)), lengths,
                        batch_size=8).compute(scheduler="sync")
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_array_and_bag_on_local_cluster(client):
    model = _model(return_sequences=True)
    X, lengths = _data(64)
    want = model.predict(X, lengths)
    out = fdask.predict(model, da.from_array(X, chunks=(16, -1, -1)),
                        da.from_array(lengths, chunks=32))
    np.testing.assert_allclose(client.compute(out).result(), want, rtol=1e-5, atol=1e-6)
    # each worker ran some of the 4 chunks, and loaded the model once
    loaded = client.run(lambda: len(__import__("fastrnn.dask").dask._models))
    assert sorted(loaded.values()) == [1, 1]
    seqs = [X[i, :max(int(n), 1)] for i, n in enumerate(lengths)]
    bag = fdask.predict(model, db.from_sequence(seqs, npartitions=4), batch_size=8)
    got = client.compute(bag).result()
    whole = model.predict(seqs)
    assert len(got) == len(seqs)
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(got[i], whole[i, :len(s)], rtol=1e-5, atol=1e-6)


def test_list_of_ragged_sequences_sync():
    model = _model()
    X, lengths = _data(20)
    seqs = [X[i, :max(int(n), 1)] for i, n in enumerate(lengths)]
    got = fdask.predict(model, seqs, partition_size=6).compute(scheduler="sync")
    np.testing.assert_allclose(np.stack(got), model.predict(seqs), rtol=1e-5, atol=1e-6)


def test_engine_threads_restored_after_tasks():
    model = _model()
    X, _ = _data(8)
    before = fastrnn.get_num_threads()
    fdask.predict(model, da.from_array(X, chunks=(4, -1, -1)), threads=1).compute(
        scheduler="threads")
    assert fastrnn.get_num_threads() == before


def test_errors_name_the_argument():
    model = _model()
    X, lengths = _data(8)
    with pytest.raises(ValueError, match="first \\(batch\\) axis only"):
        fdask.predict(model, da.from_array(X, chunks=(4, 6, -1)))
    with pytest.raises(ValueError, match="lengths must have shape \\(8,\\)"):
        fdask.predict(model, da.from_array(X, chunks=(4, -1, -1)), lengths[:5])
    with pytest.raises(TypeError, match="X must be a dask.array.Array"):
        fdask.predict(model, X)
    with pytest.raises(TypeError, match="model must be a fastrnn.Sequential"):
        fdask.predict("model", [X[0]])
    with pytest.raises(ValueError, match="threads"):
        fdask.predict(model, [X[0]], threads=0)
