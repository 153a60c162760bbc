"""pytest-benchmark rows of fastrnn.dask inference at 1 and 2 workers (LocalCluster processes,
one thread each); skipped without Dask. ``python benchmarks/scaling.py`` prints sequences/second,
and its ``mpi`` mode the MPI training rows (run under mpirun)."""
import pytest

pytest.importorskip("distributed")
pytest.importorskip("dask.array")

import scaling  # noqa: E402  (benchmarks/ is on the path: pytest's rootdir-relative import)


@pytest.mark.parametrize("workers", [1, 2])
def test_dask_predict_throughput(benchmark, workers):
    rate = benchmark.pedantic(scaling.dask_rate, args=(workers, 1, 512), rounds=1, iterations=1)
    assert rate > 0
