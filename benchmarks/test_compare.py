"""Tests of the comparison harness itself (``compare``): its rows, its command line, its JSON and
its exit status on a wrong contender."""
import json
import pathlib

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
