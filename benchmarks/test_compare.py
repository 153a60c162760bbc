"""Tests of the comparison harness itself (``compare``): its rows, its command line, its JSON and
its exit status on a wrong contender."""
import contextlib
import json
import pathlib
import time

import numpy as np
import pytest

from compare import cli, configs, contenders, run


def test_list_prints_every_row(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == [c.name for c in configs.ALL_CONFIGS]


def test_rows_have_unique_names():
    names = [c.name for c in configs.ALL_CONFIGS]
    assert len(names) == len(set(names))


def test_only_brings_p1pad_and_rejects_unknown_rows():
    assert [c.name for c in configs.select_configs("p1,S1", "auto")] == ["P1", "S1", "P1pad"]
    assert not any(c.mode.startswith("train") for c in configs.select_configs(None, "off"))
    with pytest.raises(SystemExit, match="unknown config"):
        configs.select_configs("F1,X9", "auto")


def test_compare_outputs():
    a = {"y": np.ones((2, 3))}
    assert contenders.compare_outputs(a, a) is None
    assert "max abs err" in contenders.compare_outputs({"y": a["y"] + 1e-2}, a)
    assert "missing" in contenders.compare_outputs({}, a)


QUICK = ["--quick", "--repeat", "1", "--gap", "0", "--skip", "onnx"]


def test_quick_run_writes_the_json_of_the_results_files(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert cli.main(QUICK + ["--only", "S1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "\nS1     lstm stream B=1 I=32 H=32" in table and "# wrote " in table
    got = json.loads(out.read_text())
    assert set(got) == {"meta", "rows", "failures", "notes", "elapsed_s"}
    assert got["failures"] == [] and [r["config"] for r in got["rows"]] == ["S1"]
    results = sorted(pathlib.Path(__file__).parent.glob("results-*.json"))
    assert results
    for path in results:       # the committed results have the keys this run writes
        old = json.loads(path.read_text())
        assert list(old["meta"]) == list(got["meta"]), path
        assert list(old["rows"][0]) == list(got["rows"][0]), path


def test_sustained_pass_times_every_contender_and_reports_its_ratio(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "out.json"
    assert cli.main(QUICK + ["--only", "S1", "--sustained", "--skip", "onnx,ref",
                             "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "# sustained calls: each sample after" in table
    got = json.loads(out.read_text())
    row = got["rows"][0]
    assert got["meta"]["sustained"] and set(row["sustained_s"]) == {"fastrnn", "torch"}
    assert all(t > 0 for t in row["sustained_s"].values()) and row["loaded_s"] == {}
    assert row["best_peer_over_fastrnn_sustained"] == pytest.approx(
        row["sustained_s"]["torch"] / row["sustained_s"]["fastrnn"])
    line = next(ln for ln in table.splitlines()[table.splitlines().index(
        next(ln for ln in table.splitlines() if ln.startswith("# sustained calls: each"))):]
        if ln.startswith("S1 "))
    assert f"{row['best_peer_over_fastrnn_sustained']:.2f}x" in line


def test_a_wrong_contender_exits_1(monkeypatch, capsys):
    fastrnn, na = contenders.fastrnn_backends()
    if fastrnn is None or na:
        pytest.skip(f"needs both fastrnn backends: {na}")
    real = run.fastrnn_runner

    def wrong(*args, **kwargs):
        r = real(*args, **kwargs)
        if r.name == "fastrnn":      # the compiled one; the reference stays the oracle
            good = r.check
            r.check = lambda: {k: v + 1.0 for k, v in good().items()}
        return r

    monkeypatch.setattr(run, "fastrnn_runner", wrong)
    assert cli.main(QUICK + ["--only", "S1", "--skip", "onnx,torch"]) == 1
    captured = capsys.readouterr()
    assert "WRONG" in captured.out
    assert "S1/fastrnn disagrees with ref" in captured.err


# ---------------------------------------------------------------------- the model rows A1, A2

MODEL_ROWS = configs.MODEL_CONFIGS


@pytest.mark.parametrize("cfg", MODEL_ROWS, ids=[c.name for c in MODEL_ROWS])
def test_model_rows_weights_fit_both_models(cfg):
    """The generated weights are exactly the parameters of fastrnn's model and of the PyTorch
    module (names, shapes), so that each loads them all."""
    from compare import model_contenders
    fastrnn, na = contenders.fastrnn_backends()
    weights = configs.make_weights(cfg)
    assert all(w.dtype == np.float32 for w in weights.values()) and cfg.flops() > 0
    if fastrnn is not None and "compiled" not in na:
        model = model_contenders.fastrnn_model(fastrnn, cfg, "compiled")
        assert {k: v.shape for k, v in model.state_dict().items()} == \
            {k: v.shape for k, v in weights.items()}
    torch = pytest.importorskip("torch")
    module = model_contenders.torch_model(torch, cfg)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == \
        {k: v.shape for k, v in weights.items()}


def test_model_rows_run_and_agree_with_torch(tmp_path):
    pytest.importorskip("torch")
    fastrnn, na = contenders.fastrnn_backends()
    if fastrnn is None or "compiled" in na:
        pytest.skip(f"needs fastrnn's compiled backend: {na}")
    out = tmp_path / "out.json"
    assert cli.main(QUICK + ["--only", "A1,A2", "--skip", "onnx,ref", "--threads", "1",
                             "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["config"] for r in rows] == ["A1", "A2"]
    for r in rows:
        assert r["oracle"] == "torch" and r["time_s"]["fastrnn"] and r["time_s"]["torch"]


@pytest.mark.parametrize("what", ["gradient", "loss"])
def test_a_wrong_model_contender_exits_1(monkeypatch, capsys, what):
    """A fastrnn model step whose one gradient (or loss) is off by 1e-3 of its scale is
    caught by the check against PyTorch."""
    pytest.importorskip("torch")
    fastrnn, na = contenders.fastrnn_backends()
    if fastrnn is None or "compiled" in na:
        pytest.skip(f"needs fastrnn's compiled backend: {na}")
    real = run.fastrnn_runner

    def wrong(*args, **kwargs):
        r = real(*args, **kwargs)
        good = r.check

        def check():
            got = good()
            key = "loss" if what == "loss" else "grad_0.norm2.weight"
            got[key] = got[key] + 1e-3 * max(1.0, float(np.abs(got[key]).max()))
            return got

        r.check = check
        return r

    monkeypatch.setattr(run, "fastrnn_runner", wrong)
    assert cli.main(QUICK + ["--only", "A2", "--skip", "onnx,ref"]) == 1
    assert "A2/fastrnn disagrees with torch" in capsys.readouterr().err


def test_a_loaded_pass_leaves_fastrnn_off_one_thread_for_the_next_row():
    """After the busy processes of ``--load`` the harness waits out fastrnn's switch to one
    thread, so that the next row's unloaded samples do not run on one thread."""
    from compare import timing
    _compiled = pytest.importorskip("fastrnn.engine._compiled")
    t0 = time.perf_counter()
    with timing.busy_processes(1):
        _compiled.note_contention(_compiled.CONTENDED_HOLD)    # as the load would have made it
    assert time.perf_counter() - t0 >= _compiled.CONTENDED_HOLD
    assert not _compiled.contended()


def test_the_loaded_pass_reports_the_mean_beside_the_median(monkeypatch, tmp_path, capsys):
    """Under load a median hides the slow calls (a peer whose means ran 17-30% above its
    medians looked better than it was): ``--load`` reports the slowdown of both."""
    from compare import timing
    busy = []

    @contextlib.contextmanager
    def fake_busy(n):
        busy.append(n)
        yield
        busy.pop()

    def fake_samples(runners, *args, **kwargs):
        for r in runners:     # alone: 1, 1, 1 ms; loaded: 2, 2, 8 ms (median 2, mean 4)
            r.samples = [2e-3, 2e-3, 8e-3] if busy and busy[-1] else [1e-3] * 3

    monkeypatch.setattr(timing, "busy_processes", fake_busy)
    monkeypatch.setattr(timing, "time_runners", fake_samples)
    out = tmp_path / "out.json"
    assert cli.main(QUICK + ["--only", "S1", "--load", "1", "--skip", "onnx,torch",
                             "--json", str(out)]) == 0
    table = capsys.readouterr().out
    row = json.loads(out.read_text())["rows"][0]
    assert row["loaded_s"]["fastrnn"] == pytest.approx(2e-3)
    assert row["loaded_mean_s"]["fastrnn"] == pytest.approx(4e-3)
    assert row["sustained_mean_s"]["fastrnn"] == pytest.approx(1e-3)
    assert row["slowdown"]["fastrnn"] == pytest.approx(2.0)
    assert row["slowdown_mean"]["fastrnn"] == pytest.approx(4.0)
    assert "2.00x / 4.00x" in next(ln for ln in table.splitlines()[::-1] if ln.startswith("S1 "))
