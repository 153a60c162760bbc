"""The ``fastrnn`` command line: ``demo``, ``train``, ``predict`` and ``generate``.

``fastrnn demo`` trains a character-level LSTM on the Zen of Python (it ships with Python, so
nothing is downloaded) and shows its metrics, its speed and the text it writes.
``fastrnn train --task {forecast,charlm,classify} --data FILE`` trains a model on a CSV time
series, a text file or a labelled CSV of texts and saves it with everything ``predict`` and
``generate`` need (scaling, vocabulary, label names) in ``model.info``.

A bad argument or a bad file gets one line on stderr, ``fastrnn: error: ...``, and exit status 2
(set ``FASTRNN_TRACEBACK=1`` to see the traceback of an error instead).

The package: ``parser`` (the arguments), ``data`` (reading the files), ``train`` (the three
tasks), ``commands`` (demo, predict, generate), ``errors`` (how problems are reported).

Examples
--------
.. code-block:: console

    $ fastrnn demo
    $ fastrnn train --task forecast --data series.csv --window 24 --out model.npz --plot curves.png
    $ fastrnn predict --model model.npz --data series.csv --steps 12
    $ fastrnn train --task charlm --data book.txt --out lm.npz
    $ fastrnn generate --model lm.npz --start "Once upon" --length 300 --temperature 0.8
    $ fastrnn train --task classify --data reviews.csv --out sentiment.npz
    $ fastrnn predict --model sentiment.npz --data new_reviews.txt
"""
import os
import sys

from .commands import cmd_demo, cmd_generate, cmd_predict
from .errors import PROG, CLIError, one_line
from .parser import _fraction, _positive_float, _positive_int, _seed, build_parser  # noqa: F401
from .train import DEFAULTS, MAX_VOCABULARY, TASKS, cmd_train

# _fraction, _positive_float, _positive_int and _seed (argparse types) are imported for the tests.
__all__ = [
    "DEFAULTS", "MAX_VOCABULARY", "PROG", "TASKS", "CLIError", "build_parser", "cmd_demo",
    "cmd_generate", "cmd_predict", "cmd_train", "main",
]


def main(argv=None):
    """Run the ``fastrnn`` command; returns the exit status (0 ok, 2 bad arguments or files).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0, or 2 for bad arguments or files, 130 when interrupted, and for ``--help`` and
        ``--version`` the status argparse gives.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise CLIError("a command is needed: demo, train, predict or generate "
                           "(see 'fastrnn --help')")
        return args.func(args)
    except SystemExit as exc:          # --help and --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as exc:
        if os.environ.get("FASTRNN_TRACEBACK"):
            raise
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        if os.environ.get("FASTRNN_TRACEBACK"):
            raise
        print(f"{PROG}: error: not enough memory for what was asked (a smaller --hidden, "
              f"--layers, --batch-size or --length, or a smaller file, needs less)",
              file=sys.stderr)
        return 2
