"""The ``fastrnn`` command (fastrnn.cli) and the PNG line plots (fastrnn.plot).

The plots need the optional matplotlib (``fastrnn[plot]``): their tests run with it when it is
installed (the ``test`` extra installs it) and without it (made unimportable) always.

Every subcommand runs on small files generated here, with tiny models; bad arguments and bad
files must give exit status 2 and exactly one line on stderr, never a traceback.
"""
import argparse
import builtins
import contextlib
import importlib
import io
import math
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import cli
from fastrnn.plot import PALETTE, line_plot, write_png
from conftest import ROOT

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


# ------------------------------------------------------------------------------ plot

try:
    import matplotlib.image
except ImportError:                                      # the optional extra is not installed
    matplotlib = None
needs_matplotlib = pytest.mark.skipif(matplotlib is None, reason="needs matplotlib "
                                      "(pip install fastrnn[plot])")


def png_size(path):
    """``(height, width)`` of a PNG file: its signature checked, decoded by matplotlib."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path).shape[:2]


def _block_matplotlib_in_sys_modules(monkeypatch):
    for name in [n for n in sys.modules if n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def _block_matplotlib_in_import(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.fixture(params=["sys.modules", "import"])
def no_matplotlib(request, monkeypatch):
    """matplotlib made unimportable (as when fastrnn[plot] is not installed), two ways."""
    {"sys.modules": _block_matplotlib_in_sys_modules,
     "import": _block_matplotlib_in_import}[request.param](monkeypatch)


@needs_matplotlib
@pytest.mark.parametrize("width, height", [(640, 400), (320, 200), (201, 151), (1001, 777)])
def test_line_plot_writes_a_png_of_the_requested_size(tmp_path, width, height):
    path = tmp_path / "curves.png"
    line_plot(path, {"loss": [2.0, 1.2, 0.8, 0.7], "val_loss": [2.1, 1.5, 1.3, 1.4],
                     "third": [1.0, math.nan, 1.1, 1.0]}, title="LSTM charlm", width=width,
              height=height)
    assert png_size(path) == (height, width)
    assert not list(tmp_path.glob(".*tmp"))              # no temporary file left behind


@needs_matplotlib
def test_line_plot_draws_the_series_titles_and_colours_as_given(tmp_path, monkeypatch):
    """What is drawn, read from the figure (not from pixels): the texts as written (``||``
    and ``$`` included), one line per series in PALETTE's colours, x from 1, gaps for
    non-finite values, whole-number epoch ticks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figures = []
    real_print_png = FigureCanvasAgg.print_png

    def spy(canvas, *args, **kwargs):
        figures.append(canvas.figure)
        return real_print_png(canvas, *args, **kwargs)

    monkeypatch.setattr(FigureCanvasAgg, "print_png", spy)
    line_plot(tmp_path / "a.png", {"loss": [3.0, 3.0, 3.0], "v $x$": [math.inf, math.nan, 1.0]},
              title="norm ||dL/dh_t|| costs $5", xlabel="timestep t", ylabel="log10 norm")
    (ax,) = figures[0].axes
    assert ax.get_title() == r"norm ||dL/dh_t|| costs \$5"  # escaped: drawn as written
    assert ax.title._preprocess_math(ax.get_title()) == ("norm ||dL/dh_t|| costs $5", False)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("timestep t", "log10 norm")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss", r"v \$x\$"]
    lines = ax.get_lines()
    assert len(lines) == 2
    for line, rgb in zip(lines, PALETTE):
        assert matplotlib.colors.to_rgb(line.get_color()) == pytest.approx(
            [c / 255 for c in rgb])
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(lines[1].get_ydata(), [math.nan, math.nan, 1.0])
    assert lines[1].get_markevery() == [2]               # the lone point gets a marker
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert png_size(tmp_path / "a.png") == (400, 640)


@needs_matplotlib
def test_line_plot_single_point_and_constant_series(tmp_path):
    line_plot(tmp_path / "a.png", {"loss": [0.5]})
    line_plot(tmp_path / "b.png", {"loss": [3.0, 3.0, 3.0], "v": [math.inf, math.nan, 1.0]})
    line_plot(tmp_path / "c.png", {"loss": [math.nan, math.inf]})      # nothing finite
    line_plot(tmp_path / "d.png", {"loss": list(np.linspace(1, 0, 500))})
    for name in "abcd":
        assert png_size(tmp_path / f"{name}.png") == (400, 640)


@pytest.mark.parametrize("series, error", [
    ({}, ValueError), ([1.0, 2.0], TypeError), ({"loss": "abc"}, TypeError),
    ({"loss": [1.0, None]}, TypeError), ({1: [1.0]}, TypeError),
])
def test_line_plot_rejects_bad_series(tmp_path, series, error):
    with pytest.raises(error):
        line_plot(tmp_path / "x.png", series)
    assert not os.path.exists(tmp_path / "x.png")


@pytest.mark.parametrize("size", [{"width": 199}, {"height": 149}, {"width": 300.0},
                                  {"height": True}])
def test_line_plot_rejects_bad_sizes(tmp_path, size):
    with pytest.raises(ValueError, match="width|height"):
        line_plot(tmp_path / "x.png", {"loss": [1.0]}, **size)
    assert not os.path.exists(tmp_path / "x.png")


@needs_matplotlib
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


@needs_matplotlib
def test_write_png(tmp_path):
    img = np.zeros((7, 9, 3), np.uint8)
    img[2, 3] = (255, 127, 14)
    write_png(tmp_path / "img.png", img)
    assert png_size(tmp_path / "img.png") == (7, 9)
    for bad in (np.zeros((7, 9), np.uint8), np.zeros((7, 9, 3)), np.zeros((0, 9, 3), np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            write_png(tmp_path / "bad.png", bad)
    assert not os.path.exists(tmp_path / "bad.png")


def test_plotting_without_matplotlib_says_how_to_install_it(tmp_path, no_matplotlib):
    from fastrnn.diagnostics import plot_gradient_norms

    hint = r"matplotlib.*pip install fastrnn\[plot\]"
    with pytest.raises(ImportError, match=hint):
        fastrnn.plot.require_matplotlib()
    with pytest.raises(ImportError, match=hint):
        line_plot(tmp_path / "a.png", {"loss": [1.0, 0.5]})
    with pytest.raises(ImportError, match=hint):
        plot_gradient_norms(tmp_path / "b.png", {"rnn": [1.0, 0.1]})
    with pytest.raises(ImportError, match=hint):
        write_png(tmp_path / "c.png", np.zeros((2, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


@needs_matplotlib
def test_matplotlib_is_imported_only_to_plot_and_the_backend_is_left_alone(tmp_path):
    """``import fastrnn`` (and its CLI and plot modules) never imports matplotlib; a plot
    imports it but not pyplot, and does not change the backend the user chose."""
    code = (
        "import sys\n"
        "import fastrnn, fastrnn.cli, fastrnn.plot, fastrnn.diagnostics\n"
        "assert not any(m.split('.')[0] == 'matplotlib' for m in sys.modules), 'imported'\n"
        "fastrnn.plot.line_plot(sys.argv[1], {'loss': [1.0, 0.5]})\n"
        "import matplotlib\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert matplotlib.rcParams['backend'] == 'pdf', matplotlib.rcParams['backend']\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastrnn.__file__)),
               MPLBACKEND="pdf")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.png")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert png_size(tmp_path / "a.png") == (400, 640)


def test_train_without_matplotlib_writes_the_history_as_csv(files, tmp_path, monkeypatch):
    _block_matplotlib_in_sys_modules(monkeypatch)
    out, png = tmp_path / "m.npz", tmp_path / "curves.png"
    code, stdout, err = run("train", "--task", "forecast", "--data", files / "series.csv",
                            "--window", "8", "--out", out, "--plot", png, *TINY)
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith("fastrnn: warning: --plot: ")
    assert "pip install fastrnn[plot]" in err and str(tmp_path / "curves.csv") in err
    assert not png.exists() and out.exists()
    assert f"saved the learning curves to {tmp_path / 'curves.csv'}" in stdout
    rows = (tmp_path / "curves.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "loss", "val_loss"]
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]          # TINY: 2 epochs
    assert all(math.isfinite(float(v)) for r in rows[1:] for v in r.split(",")[1:])


# ------------------------------------------------------------------------------ argument types

@pytest.mark.parametrize("convert, text, value", [
    (cli._positive_int, "3", 3), (cli._positive_int, " 12 ", 12),
    (cli._seed, "0", 0), (cli._seed, "7", 7),
    (cli._positive_float, "0.5", 0.5), (cli._positive_float, "1e-3", 1e-3),
    (cli._fraction, "0", 0.0), (cli._fraction, "0.25", 0.25),
])
def test_argument_types_accept(convert, text, value):
    got = convert(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("convert, texts, expected", [
    (cli._positive_int, ["0", "-1", "1.5", "x", ""], "a positive integer"),
    (cli._seed, ["-1", "0.5", "seed"], "an integer >= 0"),
    (cli._positive_float, ["0", "-2", "nan", "inf", "abc"], "a number > 0"),
    (cli._fraction, ["1", "-0.1", "1.5", "nan", "half"], "a number in [0, 1)"),
])
def test_argument_types_refuse_with_one_message(convert, texts, expected):
    for text in texts:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            convert(text)
        assert str(info.value) == f"must be {expected}, got {text!r}"


@pytest.mark.parametrize("option, text, message", [
    ("--hidden", "0", "argument --hidden: must be a positive integer, got '0'"),
    ("--seed", "-3", "argument --seed: must be an integer >= 0, got '-3'"),
    ("--lr", "inf", "argument --lr: must be a number > 0, got 'inf'"),
    ("--validation-split", "1",
     "argument --validation-split: must be a number in [0, 1), got '1'"),
])
def test_argument_type_errors_name_the_option(files, option, text, message):
    code, out, err = run("train", "--task", "forecast", "--data", files / "series.csv", option,
                         text, traceback=False)
    assert code == 2 and out == ""
    assert err == f"fastrnn: error: {message} (see 'fastrnn train --help')\n"


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
        if matplotlib is not None:
            assert png_size(files / f"{task}.png") == (400, 640)
            assert f"saved the learning curves to {files / f'{task}.png'}" in stdout
        else:
            assert (files / f"{task}.csv").exists() and not (files / f"{task}.png").exists()
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
    "out is the data": (["train", "--task", "charlm", "--data", "{d}/text.txt", "--out",
                         "{d}/text.txt"], "--out {d}/text.txt: is the --data file"),
    "plot is the data": (["train", "--task", "forecast", "--data", "{d}/series.csv", "--plot",
                          "{d}/series.csv"], "is the --data file"),
    "plot is the model": (["train", "--task", "forecast", "--data", "{d}/series.csv",
                           "--plot", "{d}/m.npz", "--out", "{d}/m.npz"], "is the --out file"),
    "hidden too large": (["train", "--task", "forecast", "--data", "{d}/series.csv",
                          "--hidden", "1000000", "--epochs", "1", "--quiet"],
                         "not enough memory"),
    "generate too long": (["generate", "--model", "{d}/charlm.npz", "--length",
                           "1000000000000"], "not enough memory"),
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
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    argv, expected = ERRORS[case]
    code, out, err = run(*[a.format(d=files) for a in argv], traceback=False)
    assert expected.format(d=files) in one_error(code, err)
    assert out == ""
    assert {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()} == before


def test_an_unwritable_out_fails_before_training(files, monkeypatch):
    """It failed only after training, naming the hidden temporary file."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(fastrnn.Sequential, "fit", lambda *a, **k: pytest.fail("trained"))
    code, out, err = run("train", "--task", "forecast", "--data", files / "series.csv",
                         "--out", files / "m.npz", traceback=False)
    assert f"--out {files / 'm.npz'}: cannot write in {files} (Permission denied)" in one_error(
        code, err)


def test_a_series_near_the_float64_range_trains(files):
    """Values of +-1e308 gave RuntimeWarnings and a wrong "contains NaN or Inf"."""
    values = np.resize([1e308, -1e308, 5e307, -3e307, 0.0], 120)
    (files / "huge.csv").write_text("value\n" + "\n".join(str(float(v)) for v in values) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok("train", "--task", "forecast", "--data", files / "huge.csv", "--out",
           files / "huge.npz", *TINY)


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


def test_console_script_is_main():
    """pyproject.toml's ``fastrnn`` console script names :func:`fastrnn.cli.main`."""
    with open(ROOT / "pyproject.toml", encoding="utf-8") as f:
        target = re.search(r'^fastrnn = "([\w.]+):(\w+)"$', f.read(), flags=re.M)
    assert target is not None
    module, name = target.groups()
    assert getattr(importlib.import_module(module), name) is cli.main


def test_help_and_version_return_0(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--validation-split" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert fastrnn.__version__ in capsys.readouterr().out
