"""The adding problem (``examples/adding_problem.py``): its data, the vanishing of
``||dL/dh_t||`` back through time in a tanh RNN against an LSTM and an IRNN at initialisation,
and a short LSTM training that solves a short version of it."""
import importlib.util

import numpy as np
import pytest

from conftest import ROOT

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def ap():
    spec = importlib.util.spec_from_file_location("adding_problem", EXAMPLES / "adding_problem.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_has_two_markers_one_per_half_and_the_sum_as_target(ap):
    T = 37                                               # odd: halves of 18 and 19 steps
    x, y = ap.make_data(500, T, np.random.default_rng(1))
    assert x.shape == (500, T, 2) and y.shape == (500, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert (markers.sum(axis=1) == 2).all()
    assert (markers[:, :T // 2].sum(axis=1) == 1).all()
    assert (markers[:, T // 2:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=1), rtol=1e-6)
    # both halves' marker positions are spread over the half, not stuck at one step
    assert len(np.unique(markers[:, :T // 2].argmax(axis=1))) == T // 2
    assert len(np.unique(markers[:, T // 2:].argmax(axis=1))) == T - T // 2


def test_baseline_of_predicting_the_mean_is_one_sixth(ap):
    _, y = ap.make_data(40000, 10, np.random.default_rng(2))
    assert ap.BASELINE == pytest.approx(1 / 6)
    # sum of two U(0, 1): mean 1, variance 1/6; the standard error of the MSE here is ~0.001
    assert y.mean() == pytest.approx(1.0, abs=0.01)
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.006)


def test_make_data_rejects_too_short_sequences(ap):
    with pytest.raises(ValueError, match="T"):
        ap.make_data(3, 1, np.random.default_rng(0))


@pytest.mark.parametrize("seed", [0, 1])
def test_tanh_rnn_gradient_vanishes_back_through_time_lstm_and_irnn_much_less(ap, seed):
    T = 50
    x, y = ap.make_data(64, T, np.random.default_rng(seed))
    decay = {}                       # ||dL/dh_0|| / ||dL/dh_{T-1}|| at initialisation
    for cell in ap.CELLS:
        norms = ap.norms_profile(ap.build(cell, hidden=32, seed=seed), cell, x, y)
        assert norms.shape == (T,)
        assert norms[-1] > 0
        decay[cell] = norms[0] / norms[-1]
    # measured (seeds 0, 1, 2): tanh RNN 2e-13 .. 4e-11, LSTM 2e-5 .. 6e-5, IRNN 0.73 .. 0.82
    assert decay["tanh RNN"] < 1e-8
    assert decay["LSTM"] > 1e-6
    assert decay["LSTM"] > 1e4 * decay["tanh RNN"]
    assert 0.2 < decay["IRNN"] < 5.0                     # identity recurrence: nearly flat
    assert decay["IRNN"] > 1e7 * decay["tanh RNN"]


def test_norms_profile_is_monotone_for_the_tanh_rnn(ap):
    x, y = ap.make_data(64, 40, np.random.default_rng(3))
    norms = ap.norms_profile(ap.build("tanh RNN", hidden=32, seed=3), "tanh RNN", x, y)
    logs = np.log10(np.maximum(norms, 1e-300))
    # shrinks going back: every 10 steps at least a factor 10 smaller
    assert (logs[-11::-10] < logs[-1::-10][:len(logs[-11::-10])] - 1).all()


def test_lstm_learns_a_short_adding_problem(ap):
    # measured (seeds 0..3): test MSE 0.0004 .. 0.0011 against a baseline of 0.157 .. 0.184,
    # about 3 s each
    result = ap.run("LSTM", T=30, n_train=2000, n_test=500, epochs=10, batch_size=16,
                    lr=1e-2, hidden=32, seed=0)
    assert result["test_baseline"] == pytest.approx(1 / 6, abs=0.03)
    assert result["test_mse"] < 0.05
    assert result["test_mse"] < 0.25 * result["test_baseline"]
    assert result["norms"].shape == (30,) and result["norms_trained"].shape == (30,)


def test_main_prints_the_table_and_writes_both_plots(ap, tmp_path, capsys):
    path = tmp_path / "adding.png"
    results = ap.main(["--T", "12", "--quick", "--epochs", "1", "--plot", str(path)])
    out = capsys.readouterr().out
    assert set(results) == set(ap.CELLS)
    for cell in ap.CELLS:
        assert cell in out
        assert results[cell]["norms"].shape == (12,)
    assert "baseline" in out and "0.1667" in out
    for png in (path, tmp_path / "adding_trained.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
