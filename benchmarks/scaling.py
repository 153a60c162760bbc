"""Throughput beyond one process: fastrnn.dask inference at 1 and 2 workers, and
fastrnn.distributed training at 1 and 2 MPI ranks with the allreduce's share of a step.

Print sequences/second::

    python benchmarks/scaling.py dask [rounds]              # 1 and 2 workers, 1 thread each
    mpirun -n 1 python benchmarks/scaling.py mpi small      # then -n 2; "small" or "large"

Every worker and rank runs the engine on one thread. The MPI mode times whole training steps
(forward, backward, allreduce, update) and, apart, the allreduce of the gradient buckets.
"""
import sys
import time

import numpy as np

import fastrnn

#: the models timed: (input features, hidden units, timesteps) of an LSTM + Dense(hidden, 1)
MODELS = {"small": (8, 32, 50), "large": (64, 512, 50)}
DASK_ROWS, DASK_CHUNK = 4096, 256


def dask_model():
    return fastrnn.Sequential([fastrnn.LSTM(16, 128, seed=0, return_sequences=False),
                               fastrnn.Dense(128, 1, seed=1)])


def dask_data(n=DASK_ROWS):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 50, 16)).astype(np.float32), rng.integers(10, 51, n)


def dask_rate(workers, repeats=3, n=DASK_ROWS):
    """Sequences/second of fastrnn.dask.predict on a LocalCluster of ``workers`` processes
    (1 thread each), the median of ``repeats`` runs after a warm-up."""
    import dask.array as da
    import distributed

    import fastrnn.dask

    model = dask_model()
    X, lengths = dask_data(n)
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        Xd = client.persist(da.from_array(X, chunks=(DASK_CHUNK, -1, -1)))
        Ld = client.persist(da.from_array(lengths, chunks=DASK_CHUNK))
        out = fastrnn.dask.predict(model, Xd, Ld)
        client.compute(out).result()                      # warm-up: model loaded, compiled
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            client.compute(fastrnn.dask.predict(model, Xd, Ld)).result()
            times.append(time.perf_counter() - t0)
    return n / float(np.median(times))


def mpi_rates(kind, steps=None, batch=32):
    """Under mpirun: (sequences/second of the job, step seconds, allreduce seconds per step)."""
    from mpi4py import MPI

    from fastrnn.distributed import GradientAverager

    comm = MPI.COMM_WORLD
    fastrnn.set_num_threads(1)
    I, H, T = MODELS[kind]
    steps = (40 if kind == "small" else 8) if steps is None else steps
    model = fastrnn.Sequential([fastrnn.LSTM(I, H, seed=0, return_sequences=False),
                                fastrnn.Dense(H, 1, seed=1)])
    rng = np.random.default_rng(comm.Get_rank())
    X = rng.standard_normal((batch * (steps + 2), T, I)).astype(np.float32)
    y = rng.standard_normal((len(X), 1)).astype(np.float32)
    from fastrnn import distributed as dist

    batches = [(X[i:i + batch], y[i:i + batch]) for i in range(0, len(X), batch)]
    dist.fit(model, iter(batches[:2]), loss="mse", optimizer="adam", verbose=0)   # warm-up
    comm.Barrier()
    t0 = time.perf_counter()
    dist.fit(model, iter(batches), epochs=model.epochs_trained + 1, verbose=0)
    comm.Barrier()
    elapsed = time.perf_counter() - t0
    n_steps = len(X) // batch
    # the allreduce alone, on this model's gradients
    averager = GradientAverager(comm)
    grads = {k: np.ones_like(v) for k, v in model.parameters().items()}
    averager(grads, 0.0, 1)
    comm.Barrier()
    t1 = time.perf_counter()
    for _ in range(50):
        averager(grads, 0.0, 1)
    reduce = (time.perf_counter() - t1) / 50
    nbytes = sum(v.nbytes for v in grads.values())
    return (comm.Get_size() * len(X) / elapsed, elapsed / n_steps, reduce, nbytes)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "dask"
    if mode == "dask":          # interleaved rounds (shared machines drift), medians
        rates = {1: [], 2: []}
        for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                rates[workers].append(dask_rate(workers))
                print(f"dask workers={workers}: {rates[workers][-1]:.0f} sequences/s",
                      flush=True)
        one, two = (float(np.median(rates[w])) for w in (1, 2))
        print(f"medians: 1 worker {one:.0f}, 2 workers {two:.0f} sequences/s ({two / one:.2f}x)")
    else:
        from mpi4py import MPI

        kind = sys.argv[2] if len(sys.argv) > 2 else "small"
        rate, step, reduce, nbytes = mpi_rates(kind)
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(f"mpi ranks={MPI.COMM_WORLD.Get_size()} model={kind} ({nbytes / 1e6:.2f} MB "
                  f"of gradients): {rate:.0f} sequences/s, step {step * 1e3:.2f} ms, "
                  f"allreduce {reduce * 1e3:.3f} ms ({100 * reduce / step:.1f}% of a step)")
