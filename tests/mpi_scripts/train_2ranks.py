"""Run under ``mpirun -n 2``: data-parallel training with fastrnn.distributed.

Writes ``rank{r}.npz`` into the directory given as the first argument: the weights after a
4-epoch run (``full.*``), after a run stopped at epoch 2 and resumed from rank 0's checkpoint
(``resumed.*``), and the Allreduce calls made; tests/test_distributed.py compares them with one
process training on the ranks' batches concatenated (:func:`reference_batches`).
"""
import os
import sys

import numpy as np

import fastrnn
from fastrnn import distributed as dist
from fastrnn.models.training import row_batches

N, T, F, H = 37, 9, 3, 6      # 37 rows: one is left out so that the 2 ranks have 18 each
EPOCHS, BATCH, SEED = 4, 5, 3


def make_data():
    """Inputs, per-step targets and lengths (variable: the ranks' batches have different
    numbers of valid steps, so their gradients must be weighted)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, T, F))
    lengths = rng.integers(1, T + 1, N)
    y = np.cumsum(X[..., :1], axis=1) * 0.3
    return X, y, lengths


def make_model(seed):
    """A float64 LSTM with per-step outputs."""
    return fastrnn.Sequential([fastrnn.LSTM(F, H, dtype="float64", seed=seed),
                               fastrnn.Dense(H, 1, dtype="float64", seed=seed + 1)])


def optimizer():
    return fastrnn.optim.Adam(0.02)


def reference_batches(X, y, lengths, size=2, epochs=EPOCHS):
    """The batches one process trains on to match ``size`` ranks: step k of an epoch is the
    ranks' k-th batches concatenated (rank r's rows are r::size, shuffled as fit does)."""
    n = len(X) - len(X) % size
    shards = [np.arange(r, n, size) for r in range(size)]
    steps, batches = row_batches(len(shards[0]), BATCH, True, SEED)
    for epoch in range(epochs):
        for parts in zip(*(batches(epoch) for _ in shards)):
            rows = np.concatenate([s[p] for s, p in zip(shards, parts)])
            yield X[rows], y[rows], lengths[rows]


def main(out):
    from mpi4py import MPI

    fastrnn.set_num_threads(1)         # one engine thread per rank: 2 ranks on 2 cores
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    X, y, lengths = make_data()
    kw = dict(lengths=lengths, epochs=EPOCHS, batch_size=BATCH, seed=SEED, verbose=0)

    # 1. 4 epochs from rank 0's initial weights (rank 1 starts from other ones: broadcast)
    full = make_model(0 if rank == 0 else 50)
    dist.fit(full, X, y, loss="mse", optimizer=optimizer(), **kw)

    # 2. 2 epochs, a checkpoint per rank asked for (only rank 0 writes), then a resume in
    # which rank 0 loads the checkpoint and rank 1 has an unrelated model without optimizer
    part = make_model(0 if rank == 0 else 60)
    ckpt = os.path.join(out, f"ckpt-rank{rank}.npz")
    dist.fit(part, X, y, loss="mse", optimizer=optimizer(), **{**kw, "epochs": 2},
             callbacks=[fastrnn.callbacks.ModelCheckpoint(ckpt)])
    comm.Barrier()
    wrote = os.path.exists(ckpt)
    resumed = (fastrnn.load_model(os.path.join(out, "ckpt-rank0.npz")) if rank == 0
               else make_model(70))
    history = dist.fit(resumed, X, y, **kw)
    digest = dist.check_in_sync(resumed)

    # 3. each rank's own iterable of batches, of unequal numbers: read in lockstep
    own = make_model(0)
    mine = [(X[i:i + 4], y[i:i + 4], lengths[i:i + 4]) for i in range(rank * 4, 20, 8)][:3 - rank]
    dist.fit(own, iter(mine), loss="mse", optimizer=optimizer(), verbose=0)

    np.savez(os.path.join(out, f"rank{rank}.npz"),
             **{f"full.{k}": v for k, v in full.state_dict().items()},
             **{f"resumed.{k}": v for k, v in resumed.state_dict().items()},
             **{f"own.{k}": v for k, v in own.state_dict().items()},
             wrote_checkpoint=wrote, epochs_trained=resumed.epochs_trained,
             history_loss=np.array(history["loss"]), digest=digest,
             own_steps=own.optimizer.iterations)


if __name__ == "__main__":
    main(sys.argv[1])
