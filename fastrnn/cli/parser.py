"""The arguments of the ``fastrnn`` command: their types and the parser of every subcommand."""
import argparse
import math

from .. import __version__
from .commands import cmd_demo, cmd_generate, cmd_predict
from .errors import PROG, CLIError
from .train import TASKS, cmd_train


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) raised as :class:`CLIError`."""

    def error(self, message):
        """Raise ``message`` as a :class:`CLIError` that points to ``--help``."""
        raise CLIError(f"{message} (see '{self.prog} --help')")


# ------------------------------------------------------------------------------ argument types

def _argument_type(name, parse, accept, expected):
    """An argparse ``type=``: ``parse(text)`` (int or float) if ``accept`` takes the value.

    Text that does not parse, or a value ``accept`` refuses, raises
    :class:`argparse.ArgumentTypeError` ``"must be <expected>, got '<text>'"`` (argparse
    prefixes the option's name).
    """
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    convert.__name__ = convert.__qualname__ = name
    return convert


_positive_int = _argument_type("_positive_int", int, lambda v: v >= 1, "a positive integer")
_seed = _argument_type("_seed", int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _argument_type("_positive_float", float,
                                 lambda v: math.isfinite(v) and v > 0, "a number > 0")
_fraction = _argument_type("_fraction", float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


# ------------------------------------------------------------------------------ the parser

def build_parser():
    """The argument parser of the ``fastrnn`` command.

    Returns
    -------
    argparse.ArgumentParser
        Its errors raise :class:`~fastrnn.cli.errors.CLIError`; the parsed arguments of a
        subcommand hold the function that runs it as ``func``.
    """
    parser = _Parser(prog=PROG, description="Fast, exact recurrent neural networks on the CPU: "
                     "train and use RNN, LSTM and GRU models.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_train(sub)
    _add_predict(sub)
    _add_generate(sub)
    return parser


def _add_demo(sub):
    p = sub.add_parser("demo", help="train a character-level LSTM on the Zen of Python and "
                       "show its metrics, speed and generated text (no downloads)",
                       description="Train a character-level LSTM on the Zen of Python (it "
                       "ships with Python), then report its loss, accuracy and speed and "
                       "show the text it writes, greedily and with a temperature.")
    p.add_argument("--quick", action="store_true", help="a tiny model for a few seconds")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)


def _add_train(sub):
    p = sub.add_parser("train", help="train a model on a file and save it",
                       description="Train a model on a file and save it (with what predict "
                       "and generate need). forecast: a CSV time series, the next value after "
                       "each window. charlm: a text file, the next character at every step. "
                       "classify: a CSV of text,label rows.")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", required=True, metavar="FILE", help="the training data")
    p.add_argument("--column", metavar="NAME|INDEX",
                   help="forecast: the CSV column of the series (a header name or a 0-based "
                        "index); needed when the file has several numeric columns")
    _add_model_options(p)
    _add_fit_options(p)
    p.add_argument("--window", type=_positive_int, metavar="N",
                   help="forecast: input steps per prediction (default 24); charlm: "
                        "characters per training window (default 64); classify: longest text "
                        "in words, longer ones are cut (default 200)")
    p.add_argument("--stride", type=_positive_int, metavar="N",
                   help="forecast, charlm: steps between window starts (default: forecast 1, "
                        "charlm window/4)")
    p.add_argument("--out", default="model.npz", metavar="FILE",
                   help="where to save the model (default model.npz)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write the learning curves as a PNG (needs matplotlib: "
                        "pip install fastrnn[plot]; without it, as FILE.csv)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar or description; results only")
    p.set_defaults(func=cmd_train)


def _add_model_options(p):
    """``train``'s options of the model's shape."""
    p.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm",
                   help="recurrent cell (default lstm)")
    p.add_argument("--hidden", type=_positive_int, metavar="N",
                   help="hidden units (default: forecast 32, charlm 128, classify 64)")
    p.add_argument("--layers", type=_positive_int, default=1, metavar="N",
                   help="stacked recurrent layers (default 1)")
    p.add_argument("--embedding", type=_positive_int, default=32, metavar="N",
                   help="charlm, classify: size of the token embedding (default 32)")


def _add_fit_options(p):
    """``train``'s options of the training itself."""
    p.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="training epochs (default: forecast 20, charlm 20, classify 10)")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                   help="sequences per update (default 32)")
    p.add_argument("--lr", type=_positive_float, metavar="F",
                   help="Adam's learning rate (default: forecast 0.01, charlm 0.005, "
                        "classify 0.01)")
    p.add_argument("--clip-norm", type=_positive_float, default=5.0, metavar="F",
                   help="clip the gradients' global norm to this (default 5)")
    p.add_argument("--validation-split", type=_fraction, default=0.2, metavar="F",
                   help="share held out for validation, in [0, 1): the end of a series or "
                        "text, random rows of a classification file (default 0.2)")


def _add_predict(sub):
    p = sub.add_parser("predict", help="forecast a series or label texts with a trained model",
                       description="forecast model: the next --steps values after the series "
                       "in a CSV file (each prediction is fed back). classify model: a label "
                       "for each line of a text file, or each row of a CSV file. Prints one "
                       "result per line.")
    p.add_argument("--model", required=True, metavar="FILE")
    p.add_argument("--data", required=True, metavar="FILE")
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help="forecast: values to predict (default 1)")
    p.add_argument("--column", metavar="NAME|INDEX",
                   help="forecast: the CSV column of the series (default: the training "
                        "column's name, or the only numeric column)")
    p.set_defaults(func=cmd_predict)


def _add_generate(sub):
    p = sub.add_parser("generate", help="write text with a character-level language model",
                       description="Write text with a model from 'fastrnn train --task "
                       "charlm', one character at a time from a start text.")
    p.add_argument("--model", required=True, metavar="FILE")
    p.add_argument("--start", metavar="TEXT",
                   help="the text to continue (default: the first character of the training "
                        "text)")
    p.add_argument("--length", type=_positive_int, default=200, metavar="N",
                   help="characters to generate (default 200)")
    p.add_argument("--temperature", type=_positive_float, default=1.0, metavar="F",
                   help="sampling temperature; lower is more conservative (default 1)")
    p.add_argument("--greedy", action="store_true",
                   help="always take the most likely character")
    p.add_argument("--seed", type=_seed, default=None, help="random seed of the sampling")
    p.set_defaults(func=cmd_generate)
