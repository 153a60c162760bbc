"""``fastrnn train``: the three tasks, forecast, charlm and classify, and the steps they share.

A task reads its file and shapes the data (training rows, validation rows), and says which
model, loss and metrics fit it, what the saved model's ``info`` holds and how its results
read. :func:`cmd_train` runs every task the same way: describe the model, fit it, report,
save it, plot the learning curves.
"""
import os
import sys
import time

import numpy as np

from ..layers import GRU, LSTM, RNN, Dense, Embedding
from ..models import Sequential
from ..optim import Adam
from ..text.vocabulary import Vocabulary
from .data import (
    check_output,
    encode_texts,
    read_labelled,
    read_series,
    read_text,
    windows,
    write_history_csv,
)
from .errors import CLIError, warn

#: per-task defaults of the options that default to None on the command line (a charlm's
#: stride None is window // 4)
DEFAULTS = {
    "forecast": {"hidden": 32, "epochs": 20, "lr": 0.01, "window": 24, "stride": 1},
    "charlm": {"hidden": 128, "epochs": 20, "lr": 0.005, "window": 64, "stride": None},
    "classify": {"hidden": 64, "epochs": 10, "lr": 0.01, "window": 200, "stride": 1},
}
MAX_VOCABULARY = 20000          # words kept by a classifier's vocabulary (most frequent first)
_CLI_FORMAT = 1                 # version of the layout of model.info written by `train`
_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
TASKS = ("forecast", "charlm", "classify")


def recurrent(cell, input_size, hidden, layers, seed, return_sequences):
    """A recurrent layer of kind ``cell`` ("lstm", "gru" or "rnn")."""
    return _CELLS[cell](input_size, hidden, num_layers=layers, seed=seed,
                        return_sequences=return_sequences)


def token_model(cell, *, tokens, embedding, hidden, layers, out, seed, return_sequences=True,
                padding_idx=None, activation=None):
    """Embedding, recurrent layer and Dense output, seeded ``seed``, ``seed + 1``, ``seed + 2``.

    ``tokens`` is the size of the vocabulary, ``out`` the width of the Dense layer; the other
    arguments go to the layer they name.
    """
    return Sequential([
        Embedding(tokens, embedding, padding_idx=padding_idx, seed=seed),
        recurrent(cell, embedding, hidden, layers, seed + 1, return_sequences),
        Dense(hidden, out, activation=activation, seed=seed + 2),
    ])


# ------------------------------------------------------------------------------ the command

def cmd_train(args):
    """Train a model for a task on a file, save it, and plot its learning curves."""
    _apply_defaults(args)
    if args.column is not None and args.task != "forecast":
        raise CLIError("--column applies to --task forecast only")
    check_output("--out", args.out, [("--data", args.data)])
    check_output("--plot", args.plot, [("--data", args.data), ("--out", args.out)])
    history_csv = _history_csv_instead_of_plot(args.plot)

    def say(line=""):
        if not args.quiet:
            print(line)
            sys.stdout.flush()

    task = _TASK_CLASSES[args.task](args, say)
    model, history, seconds = _fit(task, args, say)
    lines = task.report(model, history)
    epochs = len(history.epoch)
    say(f"trained {epochs} epochs in {seconds:.1f} s ({epochs * len(task.x) / seconds:,.0f} "
        f"sequences/s)")
    for line in lines:
        print(line)
    model.save(args.out)
    print(f"saved the model to {args.out}")
    _save_curves(args, history, history_csv)
    return 0


def _apply_defaults(args):
    """Fill the options left at None with the task's :data:`DEFAULTS`."""
    for name, value in DEFAULTS[args.task].items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _history_csv_instead_of_plot(plot):
    """Where the learning curves go as CSV if ``--plot`` was asked for without matplotlib."""
    if not plot:
        return None
    from ..plot import require_matplotlib

    try:
        require_matplotlib()
    except ImportError as exc:
        history_csv = os.path.splitext(plot)[0] + ".csv"
        warn(f"--plot: {exc}; the learning curves will be written as CSV to {history_csv} "
             f"instead")
        return history_csv
    return None


def _fit(task, args, say):
    """Describe ``task``'s model, train it with the command line's settings and fill its
    ``info``; returns ``(model, history, seconds)``."""
    model = task.model(args)
    n_val = 0 if task.validation is None else len(task.validation[0])
    say("")
    model.summary(print_fn=say)
    say(f"{len(task.x)} training {task.unit}, {n_val} validation {task.unit}")
    t0 = time.perf_counter()
    history = model.fit(task.x, task.y, lengths=task.lengths, loss=task.loss,
                        optimizer=Adam(lr=args.lr), epochs=args.epochs,
                        batch_size=args.batch_size, validation_data=task.validation,
                        clip_norm=args.clip_norm, metrics=task.metrics,
                        verbose=0 if args.quiet else 1, seed=args.seed)
    seconds = time.perf_counter() - t0
    model.info = {"task": args.task, "cli_format": _CLI_FORMAT, "cell": args.cell,
                  **task.info()}
    return model, history, seconds


def _save_curves(args, history, history_csv):
    """Plot the learning curves to ``--plot``, or write them to ``history_csv``."""
    if history_csv is not None:
        write_history_csv(history_csv, history)
        print(f"saved the learning curves to {history_csv}")
    elif args.plot:
        from ..plot import line_plot

        curves = {k: v for k, v in history.history.items() if k in ("loss", "val_loss")}
        line_plot(args.plot, curves, title=f"{args.cell} {args.task}",
                  ylabel="mse" if args.task == "forecast" else "cross-entropy")
        print(f"saved the learning curves to {args.plot}")


def _split(n, fraction, what, path, option_hint):
    """Rows for training and validation: ``n_train`` (validation takes the rest)."""
    n_val = round(n * fraction)
    if fraction > 0 and n_val == 0:
        n_val = 1
    if n - n_val < 1 or (fraction > 0 and n_val < 1):
        raise CLIError(f"{path}: {n} {what} are too few to hold out a validation share of "
                       f"{fraction} ({option_hint})")
    return n - n_val


def _mean_std(values):
    """The mean and standard deviation of ``values`` (a std of 0 is taken as 1), computed on
    the values scaled by their largest magnitude, so that a series near the float64 range
    (values of 1e308) does not overflow."""
    scale = float(np.abs(values).max()) or 1.0
    scaled = values / scale
    std = float(scaled.std()) * scale
    return float(scaled.mean()) * scale, std if std > 0 else 1.0


def _accuracy_lines(history, validation=None, baseline=""):
    """The last epoch's loss and accuracy, on the training rows and (described by
    ``validation``, followed by ``baseline``) on the validation rows."""
    logs = {k: v[-1] for k, v in history.history.items()}
    lines = [f"training: loss {logs['loss']:.4f}, accuracy {100 * logs['accuracy']:.1f}%"]
    if validation is not None:
        lines.append(f"validation ({validation}): loss {logs['val_loss']:.4f}, "
                     f"accuracy {100 * logs['val_accuracy']:.1f}%{baseline}")
    return lines


# ------------------------------------------------------------------------------ the tasks

class _Task:
    """The data of a task and how it is modelled and reported.

    A subclass reads and shapes its data in ``__init__(args, say)`` (setting ``x``, ``y`` and,
    where it has them, ``lengths`` and ``validation``) and defines ``model(args)``,
    ``info()`` (its entries of the saved model's ``info``) and ``report(model, history)``
    (the result lines).
    """

    loss = "cce"
    metrics = ("accuracy",)
    unit = "windows"            # what a row of x is, in messages
    lengths = None              # per-row lengths of x, for variable-length rows
    validation = None           # (x, y) or (x, y, lengths) held out, or None


class _Forecast(_Task):
    """forecast: windows of a CSV series, each followed by the (standardised) value to predict."""

    loss = "mse"
    metrics = ()

    def __init__(self, args, say):
        self.values, self.label = read_series(args.data, args.column)
        self.window = args.window
        self.starts = self._window_starts(args)
        self.n_train = _split(len(self.starts), args.validation_split, "windows", args.data,
                              "lower --window or --validation-split")
        seen = self.starts[self.n_train - 1] + self.window + 1  # values seen by training windows
        self.mean, self.std = _mean_std(self.values[:seen])
        x, y = self._standardised_windows()
        self.x, self.y = x[:self.n_train], y[:self.n_train]
        if self.n_train < len(x):
            self.validation = (x[self.n_train:], y[self.n_train:])
        say(f"forecast: {len(self.values)} values of column {self.label!r} in {args.data}; "
            f"windows of {self.window} steps predict the next value")

    def _window_starts(self, args):
        """The start of every window (``--stride`` apart), once the series is long enough."""
        n, window = len(self.values), self.window
        need = window + (2 if args.validation_split > 0 else 1)
        if n < need:
            raise CLIError(f"{args.data}: {n} values are too few for --window {window} "
                           f"(need at least {need}); lower --window")
        return np.arange(0, n - window, args.stride)

    def _standardised_windows(self):
        """Windows ``(x, y)`` of the series standardised with ``mean`` and ``std``."""
        z = ((self.values - self.mean) / self.std).astype(np.float32)
        x = np.stack([z[s:s + self.window] for s in self.starts])[:, :, None]
        return x, z[self.starts + self.window]

    def model(self, args):
        return Sequential([
            recurrent(args.cell, 1, args.hidden, args.layers, args.seed, False),
            Dense(args.hidden, 1, seed=args.seed + 1),
        ])

    def info(self):
        return {"window": self.window, "column": self.label, "mean": self.mean,
                "std": self.std}

    def report(self, model, history):
        """The errors in the series' units on the validation windows (else the training ones),
        beside those of repeating the last value."""
        held_out = self.validation is not None
        x = self.validation[0] if held_out else self.x
        part = slice(self.n_train, None) if held_out else slice(0, self.n_train)
        ends = self.starts[part] + self.window
        truth, naive = self.values[ends], self.values[ends - 1]
        with np.errstate(over="ignore"):   # (a series near the float64 range: an mse of inf)
            pred = model.predict(x)[:, 0].astype(np.float64) * self.std + self.mean
            line = (f"{'validation' if held_out else 'training'} ({len(truth)} windows, "
                    f"original units): mse {np.mean((pred - truth) ** 2):.6g}, "
                    f"mae {np.mean(np.abs(pred - truth)):.6g}"
                    f"  (repeating the last value: mae {np.mean(np.abs(naive - truth)):.6g})")
        return [line]


class _CharLM(_Task):
    """charlm: windows of a text, the next character at every step."""

    def __init__(self, args, say):
        self.text = read_text(args.data)
        if not self.text:
            raise CLIError(f"{args.data}: the file is empty (no text)")
        self.window = window = args.window
        stride = args.stride or max(1, window // 4)
        self.vocab = Vocabulary.build([self.text], level="char")
        train_ids, self.val_ids = self._split_ids(args)
        self.x, self.y = windows(train_ids, window, stride)
        if args.validation_split > 0:
            w = min(window, len(self.val_ids) - 1)
            self.validation = windows(self.val_ids, w, w)
        say(f"charlm: {len(self.text)} characters ({len(self.vocab) - 2} distinct) in "
            f"{args.data}; windows of {window} characters every {stride}, next character at "
            f"every step")

    def _split_ids(self, args):
        """The text's ids for training and for validation (its end)."""
        ids = np.array(self.vocab.encode(self.text), np.int64)
        cut = len(ids) - round(len(ids) * args.validation_split)
        train_ids, val_ids = ids[:cut], ids[cut:]
        if len(train_ids) < self.window + 1:
            raise CLIError(f"{args.data}: {len(train_ids)} characters to train on are too few "
                           f"for --window {self.window} (need at least {self.window + 1}); "
                           f"lower --window")
        if args.validation_split > 0 and len(val_ids) < 2:
            raise CLIError(f"{args.data}: the validation share ({len(val_ids)} characters) is "
                           f"too short; raise --validation-split")
        return train_ids, val_ids

    def model(self, args):
        return token_model(args.cell, tokens=len(self.vocab), embedding=args.embedding,
                           hidden=args.hidden, layers=args.layers, out=len(self.vocab),
                           seed=args.seed)

    def info(self):
        return {"window": self.window, "vocabulary": self.vocab.to_dict(),
                "start": self.text[0]}

    def report(self, model, history):
        held_out = None if self.validation is None else f"{len(self.val_ids)} characters"
        return _accuracy_lines(history, held_out)


def _label_order(labels):
    """The distinct labels, in numeric order if they are all integers, else sorted."""
    names = sorted(set(labels))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


def _shuffled(texts, labels, names, seed):
    """The rows in a random order (files are often sorted), each label as its index in names."""
    index = {name: i for i, name in enumerate(names)}
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order], np.array([index[labels[i]] for i in order], np.int64)


class _Classify(_Task):
    """classify: the label of each text of a labelled CSV file."""

    unit = "texts"

    def __init__(self, args, say):
        texts, labels = read_labelled(args.data)
        self.names = _label_order(labels)
        if len(self.names) < 2:
            raise CLIError(f"{args.data}: every row has the label {self.names[0]!r}; "
                           f"classification needs at least 2 labels")
        texts, y = _shuffled(texts, labels, self.names, args.seed)
        n_train = _split(len(texts), args.validation_split, "rows", args.data,
                         "add rows or lower --validation-split")
        self.vocab = Vocabulary.build(texts[:n_train], level="word", lower=True,
                                      max_size=MAX_VOCABULARY)
        self.maxlen = args.window
        x, lengths = encode_texts(self.vocab, texts, self.maxlen)
        self.x, self.y, self.lengths = x[:n_train], y[:n_train], lengths[:n_train]
        if n_train < len(texts):
            self.validation = (x[n_train:], y[n_train:], lengths[n_train:])
        say(f"classify: {len(texts)} texts in {args.data}, {len(self.names)} labels "
            f"({', '.join(self.names[:10])}{', ...' if len(self.names) > 10 else ''}), "
            f"{len(self.vocab) - 2} words, up to {self.maxlen} words per text")

    @property
    def binary(self):
        """bool: Two labels, predicted by one sigmoid unit (else a softmax over all)."""
        return len(self.names) == 2

    @property
    def loss(self):
        return "bce" if self.binary else "cce"

    def model(self, args):
        return token_model(args.cell, tokens=len(self.vocab), embedding=args.embedding,
                           hidden=args.hidden, layers=args.layers,
                           out=1 if self.binary else len(self.names), seed=args.seed,
                           return_sequences=False, padding_idx=0,
                           activation="sigmoid" if self.binary else "softmax")

    def info(self):
        return {"maxlen": self.maxlen, "labels": self.names, "vocabulary": self.vocab.to_dict()}

    def report(self, model, history):
        if self.validation is None:
            return _accuracy_lines(history)
        y_val = self.validation[1]
        majority = np.bincount(self.y, minlength=len(self.names)).argmax()
        baseline = f"  (always {self.names[majority]!r}: {100 * np.mean(y_val == majority):.1f}%)"
        return _accuracy_lines(history, f"{len(y_val)} texts", baseline)


_TASK_CLASSES = {"forecast": _Forecast, "charlm": _CharLM, "classify": _Classify}
