"""The ``fastrnn`` command (fastrnn.cli) and the PNG line plots (fastrnn.plot).

Every subcommand runs on small files generated here, with tiny models; bad arguments and bad
files must give exit status 2 and exactly one line on stderr, never a traceback.
"""
import contextlib
import io
import math
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import fastrnn
from fastrnn import cli
from fastrnn.plot import PALETTE, line_plot

TINY = ["--hidden", "8", "--epochs", "2", "--batch-size", "16", "--quiet"]


def run(*argv, traceback=True):
    """``(exit status, stdout, stderr)`` of ``fastrnn ARGV`` run in this process.

    With ``traceback`` (for runs that must succeed) FASTRNN_TRACEBACK is set, so that a bug
    raises instead of being reported as a user error.
    """
    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("FASTRNN_TRACEBACK")
    if traceback:
        os.environ["FASTRNN_TRACEBACK"] = "1"
    else:
        os.environ.pop("FASTRNN_TRACEBACK", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([str(a) for a in argv])
    finally:
        if old is None:
            os.environ.pop("FASTRNN_TRACEBACK", None)
        else:
            os.environ["FASTRNN_TRACEBACK"] = old
    return code, out.getvalue(), err.getvalue()


def ok(*argv):
    code, out, err = run(*argv)
    assert code == 0, err
    return out, err


# ------------------------------------------------------------------------------ data files

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    t = np.arange(160)
    series = 10 + 3 * np.sin(t / 4) + 0.1 * rng.standard_normal(t.size)
    (d / "series.csv").write_text("date,value\n" + "".join(
        f"2024-01-{i:03d},{v:.4f}\n" for i, v in enumerate(series)))
    (d / "two.csv").write_text("a,b\n" + "".join(f"{i},{v:.3f}\n" for i, v in enumerate(series)))
    (d / "bare.csv").write_text("".join(f"{v:.3f}\n" for v in series))
    (d / "text.txt").write_text("the cat sat on the mat. the dog sat on the log. " * 8)
    words = {"pos": ["good", "great", "fine", "nice"], "neg": ["bad", "awful", "poor", "sad"]}
    rows = []
    for i in range(80):
        label = ("pos", "neg")[i % 2]
        picks = rng.choice(words[label], size=rng.integers(2, 6))
        rows.append(f"this movie was {' '.join(picks)}, really,{label}\n")
    (d / "labelled.csv").write_text("text,label\n" + "".join(
        f"\"{r.rsplit(',', 1)[0]}\",{r.rsplit(',', 1)[1]}" for r in rows))
    (d / "noheader.csv").write_text("".join(rows))       # unquoted commas inside texts
    (d / "three.csv").write_text("".join(
        f"{w} {w} thing,{k % 3}\n" for k, w in enumerate(["red", "green", "blue"] * 10)))
    (d / "new.txt").write_text("this movie was good great nice\nsad awful bad poor\n\n")
    return d


@pytest.fixture(scope="module")
def models(files):
    """One trained model per task (trained once for the module), with its plot."""
    paths = {}
    for task, data in (("forecast", "series.csv"), ("charlm", "text.txt"),
                       ("classify", "labelled.csv")):
        out = files / f"{task}.npz"
        extra = ["--window", "8"] if task != "classify" else ["--epochs", "6"]
        code, stdout, err = run("train", "--task", task, "--data", files / data, "--out", out,
                                "--plot", files / f"{task}.png", *TINY, *extra)
        assert code == 0, err
        paths[task] = (out, stdout)
    return paths


# ------------------------------------------------------------------------------ PNG decoding

def decode_png(path):
    """Pixels ``(height, width, 3)`` of an 8-bit RGB PNG, checking every chunk's CRC."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    w, h, depth, color, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color, comp, filt, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()                     # filter type None on every row
    return rows[:, 1:].reshape(h, w, 3)


def has_color(img, color):
    return bool((img == np.array(color, np.uint8)).all(axis=2).any())


# ------------------------------------------------------------------------------ plot

def test_line_plot_png_decodes_with_each_line_colour(tmp_path):
    path = tmp_path / "curves.png"
    line_plot(path, {"loss": [2.0, 1.2, 0.8, 0.7], "val_loss": [2.1, 1.5, 1.3, 1.4],
                     "third": [1.0, math.nan, 1.1, 1.0]}, title="LSTM charlm", width=320,
              height=200)
    img = decode_png(path)
    assert img.shape == (200, 320, 3)
    for color in PALETTE[:3]:
        assert has_color(img, color)
    assert has_color(img, (0, 0, 0))                     # text and ticks
    assert not list(tmp_path.glob(".*tmp"))              # no temporary file left behind


def test_line_plot_single_point_and_constant_series(tmp_path):
    line_plot(tmp_path / "a.png", {"loss": [0.5]})
    line_plot(tmp_path / "b.png", {"loss": [3.0, 3.0, 3.0], "v": [math.inf, math.nan, 1.0]})
    assert has_color(decode_png(tmp_path / "a.png"), PALETTE[0])
    img = decode_png(tmp_path / "b.png")
    assert has_color(img, PALETTE[0]) and has_color(img, PALETTE[1])


@pytest.mark.parametrize("series, error", [
    ({}, ValueError), ([1.0, 2.0], TypeError), ({"loss": "abc"}, TypeError),
    ({"loss": [1.0, None]}, TypeError), ({1: [1.0]}, TypeError),
])
def test_line_plot_rejects_bad_series(tmp_path, series, error):
    with pytest.raises(error):
        line_plot(tmp_path / "x.png", series)
    assert not os.path.exists(tmp_path / "x.png")


def test_line_plot_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"previous")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        line_plot(path, {"loss": [1.0, 0.5]})
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


# ------------------------------------------------------------------------------ demo

def test_demo_quick_prints_metrics_speed_and_text():
    out, err = ok("demo", "--quick", "--seed", "1")
    assert "Zen of Python" in out
    assert "accuracy" in out and "loss" in out
    assert "sequences/s" in out and " s:" in out
    assert "greedy continuation of 'The Zen of Python'" in out
    assert "temperature 0.8" in out
    assert "epoch" in err                                # the progress bar


# ------------------------------------------------------------------------------ train

def test_train_writes_models_plots_and_info(models, files):
    for task, (path, stdout) in models.items():
        model = fastrnn.load_model(path)
        assert model.info["task"] == task
        img = decode_png(files / f"{task}.png")
        assert img.shape == (400, 640, 3)
        assert has_color(img, PALETTE[0]) and has_color(img, PALETTE[1])   # loss, val_loss
        assert f"saved the model to {path}" in stdout
        assert "epoch" not in stdout                     # --quiet: results only
    info = fastrnn.load_model(models["forecast"][0]).info
    assert info["column"] == "value" and info["window"] == 8
    assert 9 < info["mean"] < 11 and 1 < info["std"] < 3
    assert "validation (" in models["forecast"][1] and "mae" in models["forecast"][1]
    info = fastrnn.load_model(models["classify"][0]).info
    assert info["labels"] == ["neg", "pos"] and "good" in info["vocabulary"]["tokens"]


def test_train_forecast_columns_and_cells(files):
    out = files / "gru.npz"
    stdout, _ = ok("train", "--task", "forecast", "--data", files / "two.csv", "--column", "b",
                   "--cell", "gru", "--layers", "2", "--window", "6", "--out", out, *TINY)
    model = fastrnn.load_model(out)
    assert type(model.layers[0]).__name__ == "GRU" and model.layers[0].num_layers == 2
    assert model.info["column"] == "b"
    ok("train", "--task", "forecast", "--data", files / "bare.csv", "--cell", "rnn",
       "--window", "6", "--validation-split", "0", "--out", out, *TINY)
    assert fastrnn.load_model(out).info["column"] == "0"


def test_train_classify_three_labels_and_headerless(files):
    out = files / "three.npz"
    stdout, _ = ok("train", "--task", "classify", "--data", files / "three.csv", "--out", out,
                   *TINY)
    model = fastrnn.load_model(out)
    assert model.info["labels"] == ["0", "1", "2"]
    assert model.layers[-1].activation == "softmax" and model.layers[-1].out_features == 3
    ok("train", "--task", "classify", "--data", files / "noheader.csv", "--out", out, *TINY)
    assert fastrnn.load_model(out).info["labels"] == ["neg", "pos"]


def test_train_progress_bar_unless_quiet(files):
    out = files / "loud.npz"
    stdout, err = ok("train", "--task", "charlm", "--data", files / "text.txt", "--window", "8",
                     "--hidden", "4", "--epochs", "1", "--out", out)
    assert "epoch 1/1" in err and "Embedding" in stdout and "sequences/s" in stdout


# ------------------------------------------------------------------------------ predict / generate

def test_predict_forecast_steps(models, files):
    out, _ = ok("predict", "--model", models["forecast"][0], "--data", files / "series.csv",
                "--steps", "5")
    values = [float(v) for v in out.split()]
    assert len(values) == 5 and all(0 < v < 20 for v in values)
    out, _ = ok("predict", "--model", models["forecast"][0], "--data", files / "series.csv")
    assert len(out.split()) == 1


def test_predict_classify_text_and_csv(models, files):
    out, _ = ok("predict", "--model", models["classify"][0], "--data", files / "new.txt")
    labels = out.splitlines()
    assert len(labels) == 3 and set(labels) <= {"pos", "neg"}
    out, err = ok("predict", "--model", models["classify"][0], "--data", files / "labelled.csv")
    assert len(out.splitlines()) == 80
    assert "accuracy on the 80 labelled rows" in err


def test_generate(models):
    path = models["charlm"][0]
    a, _ = ok("generate", "--model", path, "--start", "the ", "--length", "30", "--seed", "3")
    b, _ = ok("generate", "--model", path, "--start", "the ", "--length", "30", "--seed", "3")
    assert a == b and a.startswith("the ") and len(a.rstrip("\n")) <= 34
    g, _ = ok("generate", "--model", path, "--greedy", "--length", "10", "--temperature", "0.5")
    assert g.startswith("t")                             # default start: the text's first char


# ------------------------------------------------------------------------------ errors

def one_error(code, err):
    assert code == 2
    assert err.startswith("fastrnn: error: ")
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "Traceback" not in err
    return err


def bad_files(files):
    (files / "empty.csv").write_text("")
    (files / "header_only.csv").write_text("date,value\n")
    (files / "words.csv").write_text("value\n1.0\n2.0\nabc\n4.0\n")
    (files / "one_label.csv").write_text("a text,x\nanother,x\n")
    (files / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a model")
    good = (files / "forecast.npz").read_bytes()
    (files / "truncated.npz").write_bytes(good[:len(good) // 2])
    return files


ERRORS = {
    "missing data file": (["train", "--task", "forecast", "--data", "{d}/nope.csv"],
                          "no such file"),
    "empty csv": (["train", "--task", "forecast", "--data", "{d}/empty.csv"], "empty"),
    "header only": (["train", "--task", "forecast", "--data", "{d}/header_only.csv"],
                    "no values"),
    "non-numeric value": (["train", "--task", "forecast", "--data", "{d}/words.csv"],
                          "line 4: 'abc'"),
    "unknown column": (["train", "--task", "forecast", "--data", "{d}/series.csv",
                        "--column", "price"], "no column 'price'"),
    "column out of range": (["train", "--task", "forecast", "--data", "{d}/series.csv",
                             "--column", "5"], "out of range"),
    "ambiguous columns": (["train", "--task", "forecast", "--data", "{d}/two.csv"],
                          "--column"),
    "window too long": (["train", "--task", "forecast", "--data", "{d}/series.csv",
                         "--window", "500"], "lower --window"),
    "one label": (["train", "--task", "classify", "--data", "{d}/one_label.csv"],
                  "at least 2 labels"),
    "negative epochs": (["train", "--task", "forecast", "--data", "{d}/series.csv",
                         "--epochs", "-1"], "argument --epochs"),
    "validation split": (["train", "--task", "forecast", "--data", "{d}/series.csv",
                          "--validation-split", "1.5"], "argument --validation-split"),
    "bad lr": (["train", "--task", "forecast", "--data", "{d}/series.csv", "--lr", "nan"],
               "argument --lr"),
    "unknown task": (["train", "--task", "poetry", "--data", "{d}/series.csv"], "--task"),
    "missing --data": (["train", "--task", "forecast"], "--data"),
    "out dir missing": (["train", "--task", "forecast", "--data", "{d}/series.csv", "--out",
                         "{d}/no/such/dir/model.npz"], "does not exist"),
    "no command": ([], "a command is needed"),
    "unknown command": (["fly"], "invalid choice"),
    "missing model": (["generate", "--model", "{d}/nope.npz"], "no such file"),
    "corrupt model": (["generate", "--model", "{d}/corrupt.npz"], "corrupt.npz"),
    "truncated model": (["predict", "--model", "{d}/truncated.npz", "--data",
                         "{d}/series.csv"], "truncated.npz"),
    "generate with a forecast model": (["generate", "--model", "{d}/forecast.npz"],
                                       "is a forecast model"),
    "predict with a charlm model": (["predict", "--model", "{d}/charlm.npz", "--data",
                                     "{d}/text.txt"], "use 'fastrnn generate'"),
    "unseen start characters": (["generate", "--model", "{d}/charlm.npz", "--start", "XYZ"],
                                "never saw"),
    "steps on a classifier": (["predict", "--model", "{d}/classify.npz", "--data",
                               "{d}/new.txt", "--steps", "3"], "--steps"),
    "predict: missing data": (["predict", "--model", "{d}/classify.npz", "--data",
                               "{d}/nope.txt"], "no such file"),
    "bad temperature": (["generate", "--model", "{d}/charlm.npz", "--temperature", "0"],
                        "argument --temperature"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_one_line_with_status_2(models, files, case):
    bad_files(files)
    argv, expected = ERRORS[case]
    code, out, err = run(*[a.format(d=files) for a in argv], traceback=False)
    assert expected in one_error(code, err)
    assert out == ""


def test_model_not_written_by_train(files):
    model = fastrnn.Sequential([fastrnn.Dense(2, 1)])
    model.save(files / "plain.npz")
    code, _, err = run("generate", "--model", files / "plain.npz", traceback=False)
    assert "not a model written by 'fastrnn train'" in one_error(code, err)


def test_subprocess_help_and_error(tmp_path):
    # the fastrnn this test imported (installed, or a built checkout), run from elsewhere
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastrnn.__file__)))
    env.pop("FASTRNN_TRACEBACK", None)
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("demo", "train", "predict", "generate"):
        assert command in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--task", "forecast",
                           "--data", "/nonexistent/series.csv"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "fastrnn: error: /nonexistent/series.csv: no such file\n"


def test_help_and_version_return_0(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--validation-split" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert fastrnn.__version__ in capsys.readouterr().out
