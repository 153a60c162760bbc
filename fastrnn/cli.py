"""The ``fastrnn`` command line: ``demo``, ``train``, ``predict`` and ``generate``.

``fastrnn demo`` trains a character-level LSTM on the Zen of Python (it ships with Python, so
nothing is downloaded) and shows its metrics, its speed and the text it writes.
``fastrnn train --task {forecast,charlm,classify} --data FILE`` trains a model on a CSV time
series, a text file or a labelled CSV of texts and saves it with everything ``predict`` and
``generate`` need (scaling, vocabulary, label names) in ``model.info``.

A bad argument or a bad file gets one line on stderr, ``fastrnn: error: ...``, and exit status 2
(set ``FASTRNN_TRACEBACK=1`` to see the traceback of an error instead).

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
import argparse
import codecs
import contextlib
import csv
import io
import math
import os
import sys
import time

import numpy as np

PROG = "fastrnn"
TASKS = ("forecast", "charlm", "classify")
#: per-task defaults of the options that default to None on the command line
DEFAULTS = {
    "forecast": dict(hidden=32, epochs=20, lr=0.01, window=24, stride=1),
    "charlm": dict(hidden=128, epochs=20, lr=0.005, window=64, stride=None),  # window // 4
    "classify": dict(hidden=64, epochs=10, lr=0.01, window=200, stride=1),
}
MAX_VOCABULARY = 20000          # words kept by a classifier's vocabulary (most frequent first)
_CLI_FORMAT = 1                 # version of the layout of model.info written by `train`


class CLIError(Exception):
    """A problem with the user's arguments or files: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) raised as :class:`CLIError`."""

    def error(self, message):
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


# ------------------------------------------------------------------------------ files

def _read_text(path):
    """The text of a UTF-8 file (a BOM is dropped; newlines are kept as they are)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CLIError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _csv_rows(path):
    """``[(line_number, [cells...]), ...]`` of the non-blank rows of a CSV file."""
    text = _read_text(path)
    rows = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise CLIError(f"{path}: not a valid CSV file (line {reader.line_num}: {exc})") from None
    if not rows:
        raise CLIError(f"{path}: the file is empty (no rows of data)")
    return rows


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_series(path, column=None, preferred=None):
    """One numeric column of a CSV file: ``(values, column label)``.

    The first row is a header if none of its cells is a number. ``column`` is a header name
    or a 0-based index (negative counts from the end); without it, a file's only column, or
    its only numeric column, or the ``preferred`` header name is used.
    """
    rows = _csv_rows(path)
    header = None
    if not any(_is_number(cell) for cell in rows[0][1]):
        header = [cell.strip() for cell in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise CLIError(f"{path}: has a header ({', '.join(header)}) but no values")
    ncol = len(header) if header is not None else len(rows[0][1])
    names = header if header is not None else [str(i) for i in range(ncol)]
    if column is not None:
        index = _resolve_column(path, column, header, ncol)
    elif ncol == 1:
        index = 0
    elif header is not None and preferred in header:
        index = header.index(preferred)
    else:
        numeric = [j for j in range(ncol)
                   if all(j < len(row) and _is_number(row[j]) for _, row in rows)]
        if len(numeric) != 1:
            raise CLIError(f"{path}: has {ncol} columns ({', '.join(names)}); choose the series "
                           f"with --column NAME or --column INDEX (0-based)")
        index = numeric[0]
    label = names[index] if index < len(names) else str(index)
    values = np.empty(len(rows))
    for k, (line, row) in enumerate(rows):
        if index >= len(row):
            raise CLIError(f"{path} line {line}: has {len(row)} column(s), no column {label!r}")
        cell = row[index].strip()
        try:
            values[k] = float(cell)
        except ValueError:
            raise CLIError(f"{path} line {line}: {cell!r} in column {label!r} is not a "
                           f"number") from None
        if not math.isfinite(values[k]):
            raise CLIError(f"{path} line {line}: {cell!r} in column {label!r} is not a finite "
                           f"number")
    return values, label


def _resolve_column(path, column, header, ncol):
    if header is not None and column in header:
        return header.index(column)
    try:
        index = int(column)
    except ValueError:
        known = f"columns: {', '.join(header)}" if header is not None else \
            f"the file has no header; use an index 0..{ncol - 1}"
        raise CLIError(f"{path}: no column {column!r} ({known})") from None
    if not -ncol <= index < ncol:
        raise CLIError(f"{path}: column index {index} is out of range for {ncol} column(s) "
                       f"(0..{ncol - 1})")
    return index % ncol


def _read_labelled(path):
    """``(texts, labels)`` of a CSV of ``text,label`` rows (header optional).

    With a header naming ``text`` and ``label`` columns those are used; without one the label
    is the last field and the text everything before it (so unquoted commas in a text survive).
    """
    rows = _csv_rows(path)
    first = [cell.strip().lower() for cell in rows[0][1]]
    texts, labels = [], []
    if "text" in first and "label" in first:
        ti, li = first.index("text"), first.index("label")
        for line, row in rows[1:]:
            if max(ti, li) >= len(row):
                raise CLIError(f"{path} line {line}: has {len(row)} field(s), the header names "
                               f"{len(first)}")
            texts.append(row[ti])
            labels.append(row[li].strip())
    else:
        for line, row in rows:
            if len(row) < 2:
                raise CLIError(f"{path} line {line}: expected 'text,label', got one field "
                               f"{row[0][:40]!r}")
            texts.append(",".join(row[:-1]))
            labels.append(row[-1].strip())
    if not texts:
        raise CLIError(f"{path}: has a header but no rows of data")
    for (line, _), label in zip(rows[-len(labels):], labels):
        if not label:
            raise CLIError(f"{path} line {line}: the label is empty")
    return texts, labels


def _read_texts(path):
    """Texts to classify: one per line of a text file; or a CSV's ``text`` column (or its
    first field, or everything before a last label field). Returns ``(texts, labels or None)``."""
    if not path.lower().endswith(".csv"):
        text = _read_text(path)
        lines = text.splitlines()
        if not any(line.strip() for line in lines):
            raise CLIError(f"{path}: the file is empty (no texts)")
        return lines, None
    rows = _csv_rows(path)
    first = [cell.strip().lower() for cell in rows[0][1]]
    if "text" in first:
        ti = first.index("text")
        li = first.index("label") if "label" in first else None
        data = rows[1:]
        if not data:
            raise CLIError(f"{path}: has a header but no rows of data")
        texts = [row[ti] if ti < len(row) else "" for _, row in data]
        labels = None if li is None else [row[li].strip() if li < len(row) else ""
                                          for _, row in data]
        return texts, labels
    if all(len(row) == 1 for _, row in rows):
        return [row[0] for _, row in rows], None
    return [",".join(row[:-1]) for _, row in rows], [row[-1].strip() for _, row in rows]


def _check_output(option, path):
    """Fail before training, not after it, if ``path`` cannot be written."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{option} {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{option} {path}: is a directory")


# ------------------------------------------------------------------------------ models

def _recurrent(cell, input_size, hidden, layers, seed, return_sequences):
    import fastrnn

    cls = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}[cell]
    return cls(input_size, hidden, num_layers=layers, seed=seed,
               return_sequences=return_sequences)


class _TimeBudget:
    """Callback that stops training once ``seconds`` have passed (checked after each epoch)."""

    def __init__(self, seconds):
        self.seconds, self.t0, self.stopped = seconds, time.perf_counter(), False

    def on_epoch_end(self, model, epoch, logs):
        if time.perf_counter() - self.t0 > self.seconds:
            model.stop_training = self.stopped = True


def _windows(ids, window, stride):
    """Next-token windows: inputs ``ids[s:s+window]``, targets shifted by one."""
    starts = np.arange(0, len(ids) - window, stride)
    x = np.stack([ids[s:s + window] for s in starts])
    y = np.stack([ids[s + 1:s + window + 1] for s in starts])
    return x, y


def _load(path, command, tasks):
    """A model saved by ``fastrnn train`` whose task is one of ``tasks``."""
    import fastrnn

    try:
        model = fastrnn.load_model(path)
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a directory, not a model file") from None
    except (ValueError, TypeError, OSError) as exc:
        message = str(exc)
        raise CLIError(message if str(path) in message else f"{path}: {message}") from None
    task = model.info.get("task")
    if task not in TASKS:
        raise CLIError(f"{path}: not a model written by 'fastrnn train' (its info names no "
                       f"task)")
    if task not in tasks:
        hint = "'fastrnn generate'" if task == "charlm" else "'fastrnn predict'"
        raise CLIError(f"{path}: is a {task} model; 'fastrnn {command}' needs a "
                       f"{' or '.join(tasks)} model (use {hint} for this one)")
    return model


@contextlib.contextmanager
def _model_info(path):
    """Report a model file whose ``info`` lacks or garbles what the CLI stored in it."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CLIError(f"{path}: the model's info is incomplete or damaged ({exc!r})") from None


# ------------------------------------------------------------------------------ demo

def _zen_of_python():
    """The Zen of Python (``import this``), decoded without printing it."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


def _indent(text, prefix="    | "):
    return "\n".join(prefix + line for line in text.split("\n"))


def _common_prefix(a, b):
    n = 0
    for ca, cb in zip(a, b):
        if ca != cb:
            break
        n += 1
    return n


def cmd_demo(args):
    """Train a character-level LSTM on the Zen of Python and show what it learned."""
    import fastrnn
    from fastrnn.text import Vocabulary

    if args.quick:
        cfg = dict(window=32, stride=8, embed=16, hidden=32, epochs=5, batch=32, lr=0.02,
                   length=60, budget=20.0)
    else:
        cfg = dict(window=96, stride=4, embed=32, hidden=128, epochs=16, batch=16, lr=0.01,
                   length=300, budget=80.0)
    seed = args.seed
    text = _zen_of_python()
    vocab = Vocabulary.build([text], level="char")
    ids = np.array(vocab.encode(text), np.int64)
    x, y = _windows(ids, cfg["window"], cfg["stride"])
    print(f"fastrnn demo: a character-level LSTM learns the Zen of Python "
          f"({len(text)} characters, {len(vocab) - 2} distinct)")
    print()
    model = fastrnn.Sequential([
        fastrnn.Embedding(len(vocab), cfg["embed"], seed=seed),
        fastrnn.LSTM(cfg["embed"], cfg["hidden"], seed=seed + 1),
        fastrnn.Dense(cfg["hidden"], len(vocab), seed=seed + 2),
    ])
    model.summary()
    print()
    print(f"training on {len(x)} windows of {cfg['window']} characters (next character at "
          f"every step), batch {cfg['batch']}, Adam(lr={cfg['lr']}), {cfg['epochs']} epochs")
    sys.stdout.flush()
    budget = _TimeBudget(cfg["budget"])
    t0 = time.perf_counter()
    history = model.fit(x, y, loss="cce", optimizer=fastrnn.optim.Adam(lr=cfg["lr"]),
                        epochs=cfg["epochs"], batch_size=cfg["batch"], clip_norm=5.0,
                        callbacks=[budget], verbose=1, seed=seed)
    seconds = time.perf_counter() - t0
    epochs = len(history.epoch)
    sequences = epochs * len(x)
    print()
    print(f"trained {epochs} epochs in {seconds:.1f} s: {sequences / seconds:,.0f} sequences/s "
          f"({sequences * cfg['window'] / seconds:,.0f} characters/s)"
          + (f", stopped by the {cfg['budget']:.0f} s time budget" if budget.stopped else ""))
    result = model.evaluate(x, y, metrics=("accuracy",))
    common = max(set(text), key=text.count)
    print(f"next-character prediction on the text: loss {result['loss']:.3f}, accuracy "
          f"{100 * result['accuracy']:.1f}%  (before training: loss {math.log(len(vocab)):.2f}; "
          f"always guessing {common!r}: {100 * text.count(common) / len(text):.1f}%)")

    prompt = "The Zen of Python"
    start = np.array([vocab.encode(prompt)], np.int64)
    greedy = prompt + vocab.decode(model.generate(start, cfg["length"], greedy=True)[0])
    match = _common_prefix(greedy, text) - len(prompt)
    print()
    print(f"greedy continuation of {prompt!r} (the original text for {max(match, 0)} of "
          f"{cfg['length']} characters):")
    print(_indent(greedy))
    print()
    temperature = 0.8
    sampled = prompt + vocab.decode(model.generate(start, cfg["length"],
                                                   temperature=temperature, seed=seed)[0])
    print(f"sampled with temperature {temperature} (seed {seed}):")
    print(_indent(sampled))
    return 0


# ------------------------------------------------------------------------------ train

def _fit(model, args, x, y, validation, loss, metrics=(), lengths=None):
    """Train with the command line's settings; returns ``(history, seconds)``."""
    import fastrnn

    t0 = time.perf_counter()
    history = model.fit(x, y, lengths=lengths, loss=loss,
                        optimizer=fastrnn.optim.Adam(lr=args.lr), epochs=args.epochs,
                        batch_size=args.batch_size, validation_data=validation,
                        clip_norm=args.clip_norm, metrics=metrics,
                        verbose=0 if args.quiet else 1, seed=args.seed)
    return history, time.perf_counter() - t0


def _split(n, fraction, what, path, option_hint):
    """Rows for training and validation: ``n_train`` (validation takes the rest)."""
    n_val = int(round(n * fraction))
    if fraction > 0 and n_val == 0:
        n_val = 1
    if n - n_val < 1 or (fraction > 0 and n_val < 1):
        raise CLIError(f"{path}: {n} {what} are too few to hold out a validation share of "
                       f"{fraction} ({option_hint})")
    return n - n_val


def _train_forecast(args, say):
    import fastrnn

    values, label = _read_series(args.data, args.column)
    window = args.window
    n_windows = len(values) - window
    need = window + (2 if args.validation_split > 0 else 1)
    if len(values) < need:
        raise CLIError(f"{args.data}: {len(values)} values are too few for --window {window} "
                       f"(need at least {need}); lower --window")
    starts = np.arange(0, n_windows, args.stride)
    n_train = _split(len(starts), args.validation_split, "windows", args.data,
                     "lower --window or --validation-split")
    train_end = starts[n_train - 1] + window + 1        # values seen by training windows
    mean = float(values[:train_end].mean())
    std = float(values[:train_end].std())
    std = std if std > 0 else 1.0
    z = ((values - mean) / std).astype(np.float32)
    x = np.stack([z[s:s + window] for s in starts])[:, :, None]
    y = z[starts + window]
    say(f"forecast: {len(values)} values of column {label!r} in {args.data}; windows of "
        f"{window} steps predict the next value")
    model = fastrnn.Sequential([
        _recurrent(args.cell, 1, args.hidden, args.layers, args.seed, False),
        fastrnn.Dense(args.hidden, 1, seed=args.seed + 1),
    ])
    validation = (x[n_train:], y[n_train:]) if n_train < len(x) else None
    _describe(model, say, n_train, len(x) - n_train, "windows")
    history, seconds = _fit(model, args, x[:n_train], y[:n_train], validation, "mse")
    model.info = {"task": "forecast", "cli_format": _CLI_FORMAT, "cell": args.cell,
                  "window": window, "column": label, "mean": mean, "std": std}
    part = slice(n_train, None) if validation is not None else slice(0, n_train)
    which = "validation" if validation is not None else "training"
    pred = model.predict(x[part])[:, 0].astype(np.float64) * std + mean
    truth = values[starts[part] + window]
    naive = values[starts[part] + window - 1]
    lines = [f"{which} ({len(truth)} windows, original units): "
             f"mse {np.mean((pred - truth) ** 2):.6g}, mae {np.mean(np.abs(pred - truth)):.6g}"
             f"  (repeating the last value: mae {np.mean(np.abs(naive - truth)):.6g})"]
    return model, history, seconds, len(x[:n_train]), lines


def _train_charlm(args, say):
    import fastrnn
    from fastrnn.text import Vocabulary

    text = _read_text(args.data)
    if not text:
        raise CLIError(f"{args.data}: the file is empty (no text)")
    window = args.window
    stride = args.stride or max(1, window // 4)
    vocab = Vocabulary.build([text], level="char")
    ids = np.array(vocab.encode(text), np.int64)
    cut = len(ids) - int(round(len(ids) * args.validation_split))
    train_ids, val_ids = ids[:cut], ids[cut:]
    if len(train_ids) < window + 1:
        raise CLIError(f"{args.data}: {len(train_ids)} characters to train on are too few for "
                       f"--window {window} (need at least {window + 1}); lower --window")
    if args.validation_split > 0 and len(val_ids) < 2:
        raise CLIError(f"{args.data}: the validation share ({len(val_ids)} characters) is too "
                       f"short; raise --validation-split")
    x, y = _windows(train_ids, window, stride)
    validation = None
    if args.validation_split > 0:
        w = min(window, len(val_ids) - 1)
        validation = _windows(val_ids, w, w)
    say(f"charlm: {len(text)} characters ({len(vocab) - 2} distinct) in {args.data}; windows "
        f"of {window} characters every {stride}, next character at every step")
    model = fastrnn.Sequential([
        fastrnn.Embedding(len(vocab), args.embedding, seed=args.seed),
        _recurrent(args.cell, args.embedding, args.hidden, args.layers, args.seed + 1, True),
        fastrnn.Dense(args.hidden, len(vocab), seed=args.seed + 2),
    ])
    _describe(model, say, len(x), 0 if validation is None else len(validation[0]), "windows")
    history, seconds = _fit(model, args, x, y, validation, "cce", metrics=("accuracy",))
    model.info = {"task": "charlm", "cli_format": _CLI_FORMAT, "cell": args.cell,
                  "window": window, "vocabulary": vocab.to_dict(), "start": text[0]}
    logs = {k: v[-1] for k, v in history.history.items()}
    lines = [f"training: loss {logs['loss']:.4f}, accuracy {100 * logs['accuracy']:.1f}%"]
    if validation is not None:
        lines.append(f"validation ({len(val_ids)} characters): loss {logs['val_loss']:.4f}, "
                     f"accuracy {100 * logs['val_accuracy']:.1f}%")
    return model, history, seconds, len(x), lines


def _label_order(labels):
    names = sorted(set(labels))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


def _encode_texts(vocab, texts, maxlen):
    """Padded token ids and lengths; an empty text becomes one unknown token."""
    from fastrnn.text import pad_sequences

    seqs = [vocab.encode(t)[:maxlen] or [vocab.unk_id] for t in texts]
    return pad_sequences(seqs, maxlen=maxlen, padding="post", truncating="post", dtype="int64")


def _train_classify(args, say):
    import fastrnn
    from fastrnn.text import Vocabulary

    texts, labels = _read_labelled(args.data)
    names = _label_order(labels)
    if len(names) < 2:
        raise CLIError(f"{args.data}: every row has the label {names[0]!r}; classification "
                       f"needs at least 2 labels")
    index = {name: i for i, name in enumerate(names)}
    order = np.random.default_rng(args.seed).permutation(len(texts))   # files are often sorted
    texts = [texts[i] for i in order]
    y = np.array([index[labels[i]] for i in order], np.int64)
    n_train = _split(len(texts), args.validation_split, "rows", args.data,
                     "add rows or lower --validation-split")
    vocab = Vocabulary.build(texts[:n_train], level="word", lower=True, max_size=MAX_VOCABULARY)
    x, lengths = _encode_texts(vocab, texts, args.window)
    say(f"classify: {len(texts)} texts in {args.data}, {len(names)} labels "
        f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}), {len(vocab) - 2} "
        f"words, up to {args.window} words per text")
    binary = len(names) == 2
    model = fastrnn.Sequential([
        fastrnn.Embedding(len(vocab), args.embedding, padding_idx=0, seed=args.seed),
        _recurrent(args.cell, args.embedding, args.hidden, args.layers, args.seed + 1, False),
        fastrnn.Dense(args.hidden, 1 if binary else len(names),
                      activation="sigmoid" if binary else "softmax", seed=args.seed + 2),
    ])
    validation = None
    if n_train < len(texts):
        validation = (x[n_train:], y[n_train:], lengths[n_train:])
    _describe(model, say, n_train, len(texts) - n_train, "texts")
    history, seconds = _fit(model, args, x[:n_train], y[:n_train], validation,
                            "bce" if binary else "cce", metrics=("accuracy",),
                            lengths=lengths[:n_train])
    model.info = {"task": "classify", "cli_format": _CLI_FORMAT, "cell": args.cell,
                  "maxlen": args.window, "labels": names, "vocabulary": vocab.to_dict()}
    logs = {k: v[-1] for k, v in history.history.items()}
    lines = [f"training: loss {logs['loss']:.4f}, accuracy {100 * logs['accuracy']:.1f}%"]
    if validation is not None:
        majority = np.bincount(y[:n_train], minlength=len(names)).argmax()
        base = np.mean(y[n_train:] == majority)
        lines.append(f"validation ({len(texts) - n_train} texts): loss {logs['val_loss']:.4f}, "
                     f"accuracy {100 * logs['val_accuracy']:.1f}%  (always "
                     f"{names[majority]!r}: {100 * base:.1f}%)")
    return model, history, seconds, n_train, lines


def _describe(model, say, n_train, n_val, what):
    say("")
    model.summary(print_fn=say)
    say(f"{n_train} training {what}, {n_val} validation {what}")


def _write_history_csv(path, history):
    """Write a training history as CSV, atomically: ``epoch`` (from 1), then one column per
    logged value (``loss``, ``val_loss``, metrics), one row per epoch."""
    from .io import atomic_write

    keys = list(history.history)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history.epoch)):
        writer.writerow([i + 1, *(repr(float(history.history[k][i]))
                                  if i < len(history.history[k]) else "" for k in keys)])
    data = out.getvalue().encode("utf-8")
    atomic_write(path, lambda fileobj: fileobj.write(data))


def cmd_train(args):
    """Train a model for a task on a file, save it, and plot its learning curves."""
    defaults = DEFAULTS[args.task]
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.column is not None and args.task != "forecast":
        raise CLIError("--column applies to --task forecast only")
    _check_output("--out", args.out)
    _check_output("--plot", args.plot)
    history_csv = None
    if args.plot:
        from .plot import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as exc:
            history_csv = os.path.splitext(args.plot)[0] + ".csv"
            print(f"{PROG}: warning: --plot: {exc}; the learning curves will be written as CSV "
                  f"to {history_csv} instead", file=sys.stderr)

    def say(line=""):
        if not args.quiet:
            print(line)
            sys.stdout.flush()

    task = {"forecast": _train_forecast, "charlm": _train_charlm,
            "classify": _train_classify}[args.task]
    model, history, seconds, n_train, lines = task(args, say)
    epochs = len(history.epoch)
    say(f"trained {epochs} epochs in {seconds:.1f} s ({epochs * n_train / seconds:,.0f} "
        f"sequences/s)")
    for line in lines:
        print(line)
    model.save(args.out)
    print(f"saved the model to {args.out}")
    if history_csv is not None:
        _write_history_csv(history_csv, history)
        print(f"saved the learning curves to {history_csv}")
    elif args.plot:
        from .plot import line_plot

        curves = {k: v for k, v in history.history.items() if k in ("loss", "val_loss")}
        line_plot(args.plot, curves, title=f"{args.cell} {args.task}",
                  ylabel="mse" if args.task == "forecast" else "cross-entropy")
        print(f"saved the learning curves to {args.plot}")
    return 0


# ------------------------------------------------------------------------------ predict

def cmd_predict(args):
    """Forecast the next values of a series, or label texts, with a trained model."""
    model = _load(args.model, "predict", ("forecast", "classify"))
    info = model.info
    if info["task"] == "forecast":
        with _model_info(args.model):
            window, mean, std = int(info["window"]), float(info["mean"]), float(info["std"])
            preferred = info.get("column")
        values, label = _read_series(args.data, args.column, preferred)
        if len(values) < window:
            raise CLIError(f"{args.data}: has {len(values)} values, the model needs the last "
                           f"{window} (its window)")
        z = list(((values[-window:] - mean) / std).astype(np.float32))
        out = []
        for _ in range(args.steps or 1):
            x = np.array(z[-window:], np.float32)[None, :, None]
            nxt = float(model.predict(x)[0, 0])
            z.append(nxt)
            out.append(nxt * std + mean)
        for v in out:
            print(f"{v:.6g}")
        return 0
    if args.steps is not None:
        raise CLIError("--steps applies to forecast models only")
    if args.column is not None:
        raise CLIError("--column applies to forecast models only")
    from fastrnn.text import Vocabulary

    with _model_info(args.model):
        vocab = Vocabulary.from_dict(info["vocabulary"])
        names = [str(n) for n in info["labels"]]
        maxlen = int(info["maxlen"])
    texts, labels = _read_texts(args.data)
    x, lengths = _encode_texts(vocab, texts, maxlen)
    p = model.predict(x, lengths=lengths)
    if p.shape[1] == 1:
        idx = (p[:, 0] > 0.5).astype(np.int64)
    else:
        idx = p.argmax(axis=1)
    predicted = [names[i] for i in idx]
    print("\n".join(predicted))
    if labels is not None and all(label in names for label in labels):
        right = sum(a == b for a, b in zip(predicted, labels))
        print(f"accuracy on the {len(labels)} labelled rows: {100 * right / len(labels):.1f}%",
              file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------ generate

def cmd_generate(args):
    """Write text with a character-level language model."""
    from fastrnn.text import Vocabulary

    model = _load(args.model, "generate", ("charlm",))
    with _model_info(args.model):
        vocab = Vocabulary.from_dict(model.info["vocabulary"])
        start = args.start if args.start is not None else str(model.info.get("start", "\n"))
    if not start:
        raise CLIError("--start must not be empty")
    unknown = sorted({c for c in start if c not in vocab or c in vocab.specials})
    if unknown:
        raise CLIError(f"--start has characters the model never saw: "
                       f"{''.join(unknown)!r}")
    tokens = np.array([vocab.encode(start)], np.int64)
    out = model.generate(tokens, args.length, temperature=args.temperature,
                         greedy=args.greedy, seed=args.seed)
    print(start + vocab.decode(out[0]))
    return 0


# ------------------------------------------------------------------------------ parser

def build_parser():
    """The argument parser of the ``fastrnn`` command."""
    from . import __version__

    parser = _Parser(prog=PROG, description="Fast, exact recurrent neural networks on the CPU: "
                     "train and use RNN, LSTM and GRU models.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="train a character-level LSTM on the Zen of Python and "
                       "show its metrics, speed and generated text (no downloads)",
                       description="Train a character-level LSTM on the Zen of Python (it "
                       "ships with Python), then report its loss, accuracy and speed and "
                       "show the text it writes, greedily and with a temperature.")
    p.add_argument("--quick", action="store_true", help="a tiny model for a few seconds")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)

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
    p.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm",
                   help="recurrent cell (default lstm)")
    p.add_argument("--hidden", type=_positive_int, metavar="N",
                   help="hidden units (default: forecast 32, charlm 128, classify 64)")
    p.add_argument("--layers", type=_positive_int, default=1, metavar="N",
                   help="stacked recurrent layers (default 1)")
    p.add_argument("--embedding", type=_positive_int, default=32, metavar="N",
                   help="charlm, classify: size of the token embedding (default 32)")
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
    return parser


def _one_line(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
    return text


def main(argv=None):
    """Run the ``fastrnn`` command; returns the exit status (0 ok, 2 bad arguments or files).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
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
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as exc:
        if os.environ.get("FASTRNN_TRACEBACK"):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
