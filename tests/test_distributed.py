"""fastrnn.distributed: data-parallel training on MPI, checked against one process.

The 2-rank test launches ``mpirun -n 2`` on tests/mpi_scripts/train_2ranks.py (skipped without
mpirun or mpi4py) and compares its weights with one process training on the ranks' batches
concatenated; the gradient buckets are tested here with a stand-in communicator.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastrnn

SCRIPT = os.path.join(os.path.dirname(__file__), "mpi_scripts", "train_2ranks.py")


def _script():
    spec = importlib.util.spec_from_file_location("train_2ranks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The two ranks' results (rank0.npz, rank1.npz) of one mpirun."""
    pytest.importorskip("mpi4py")
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("mpirun not found (install OpenMPI: apt-get install openmpi-bin)")
    out = tmp_path_factory.mktemp("mpi")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    proc = subprocess.run([mpirun, "-n", "2", "--oversubscribe", "--bind-to", "none",
                           sys.executable, "-m", "mpi4py", SCRIPT, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)], out


def _weights(result, prefix):
    return {k[len(prefix) + 1:]: v for k, v in result.items() if k.startswith(prefix + ".")}


def test_ranks_end_bit_for_bit_equal(two_ranks):
    (r0, r1), _ = two_ranks
    for prefix in ("full", "resumed", "own"):
        w0, w1 = _weights(r0, prefix), _weights(r1, prefix)
        assert w0 and w0.keys() == w1.keys()
        for name in w0:
            np.testing.assert_array_equal(w0[name], w1[name], err_msg=f"{prefix}.{name}")
    assert r0["digest"] == r1["digest"]
    np.testing.assert_array_equal(r0["history_loss"], r1["history_loss"])


def test_two_ranks_equal_one_process_on_concatenated_batches(two_ranks):
    (r0, _), _ = two_ranks
    m = _script()
    X, y, lengths = m.make_data()
    model = m.make_model(0)
    steps = -(-(len(X) // 2) // m.BATCH)
    model.fit(m.reference_batches(X, y, lengths), loss="mse", optimizer=m.optimizer(),
              epochs=m.EPOCHS, steps_per_epoch=steps, verbose=0)
    for name, want in model.state_dict().items():
        # float64: equal to rounding (the sums over the batch are split in two and weighted)
        np.testing.assert_allclose(r0[f"full.{name}"], want, rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        assert not np.array_equal(want, m.make_model(0).state_dict()[name])


def test_resume_from_rank0_checkpoint_matches_uninterrupted_run(two_ranks):
    (r0, r1), out = two_ranks
    assert r0["wrote_checkpoint"] and not r1["wrote_checkpoint"]
    assert int(r0["epochs_trained"]) == 4
    for name, want in _weights(r0, "full").items():
        np.testing.assert_array_equal(r0[f"resumed.{name}"], want, err_msg=name)


def test_own_iterables_read_in_lockstep(two_ranks):
    (r0, r1), _ = two_ranks
    assert int(r0["own_steps"]) == int(r1["own_steps"]) == 2   # rank 1 had 2 batches, rank 0 3


class _FakeComm:
    """A communicator of ``size`` ranks that all hold this rank's buffers (an Allreduce
    multiplies by ``size``), counting the calls."""

    def __init__(self, size=2):
        self.size, self.calls = size, []

    def Get_size(self):
        return self.size

    def Allreduce(self, sendbuf, recvbuf, op=None):
        recvbuf *= self.size
        self.calls.append(recvbuf.size)


def test_gradients_are_reduced_in_buckets_not_per_parameter():
    pytest.importorskip("mpi4py")
    from fastrnn.distributed import GradientAverager

    rng = np.random.default_rng(0)
    grads = {f"p{i}": rng.standard_normal(s) for i, s in enumerate([(40, 10), (40,), (5, 40)])}
    want = {k: v.copy() for k, v in grads.items()}
    comm = _FakeComm()
    averager = GradientAverager(comm, bucket_bytes=10 ** 6)
    loss = averager(grads, 0.5, 7)
    assert comm.calls == [400 + 40 + 200 + 2]               # one bucket: all + weight, loss
    assert loss == pytest.approx(0.5)
    for k in grads:                                         # (7 g + 7 g) / 14
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-15)
    comm = _FakeComm()
    averager = GradientAverager(comm, bucket_bytes=440 * 8)
    averager({k: v.copy() for k, v in want.items()}, 0.5, 3)
    assert comm.calls == [400 + 40 + 2, 200]                # buckets of at most 440 values
    with pytest.raises(ValueError, match="bucket_bytes"):
        GradientAverager(comm, bucket_bytes=0)


def test_model_bytes_round_trip():
    from fastrnn.distributed import model_from_bytes, model_to_bytes

    model = fastrnn.Sequential([fastrnn.GRU(2, 3, seed=1), fastrnn.Dense(3, 1, seed=2)])
    back = model_from_bytes(model_to_bytes(model))
    for name, p in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], p)
    with pytest.raises(TypeError, match="data must be bytes"):
        model_from_bytes("not bytes")
