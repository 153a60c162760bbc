"""``fastrnn demo``, ``fastrnn predict`` and ``fastrnn generate``.

``demo`` trains a character-level LSTM on the Zen of Python (it ships with Python, so nothing
is downloaded) and shows its metrics, its speed and the text it writes; ``predict`` and
``generate`` use a model saved by ``fastrnn train``, with what its ``info`` holds (scaling,
vocabulary, label names).
"""
import codecs
import contextlib
import io
import math
import sys
import time

import numpy as np

from ..models import load_model
from ..optim import Adam
from ..text.vocabulary import Vocabulary
from .data import encode_texts, read_series, read_texts, windows
from .errors import CLIError
from .train import TASKS, token_model

_QUICK_DEMO = {"window": 32, "stride": 8, "embed": 16, "hidden": 32, "epochs": 5, "batch": 32,
               "lr": 0.02, "length": 60, "budget": 20.0}
_DEMO = {"window": 96, "stride": 4, "embed": 32, "hidden": 128, "epochs": 16, "batch": 16,
         "lr": 0.01, "length": 300, "budget": 80.0}
_DEMO_PROMPT = "The Zen of Python"
_DEMO_TEMPERATURE = 0.8

# ------------------------------------------------------------------------------ demo

def cmd_demo(args):
    """Train a character-level LSTM on the Zen of Python and show what it learned."""
    cfg = _QUICK_DEMO if args.quick else _DEMO
    text = _zen_of_python()
    vocab = Vocabulary.build([text], level="char")
    x, y = windows(np.array(vocab.encode(text), np.int64), cfg["window"], cfg["stride"])
    print(f"fastrnn demo: a character-level LSTM learns the Zen of Python "
          f"({len(text)} characters, {len(vocab) - 2} distinct)")
    print()
    model = token_model("lstm", tokens=len(vocab), embedding=cfg["embed"], hidden=cfg["hidden"],
                        layers=1, out=len(vocab), seed=args.seed)
    model.summary()
    print()
    _demo_fit(model, x, y, cfg, args.seed)
    _demo_evaluate(model, x, y, text, vocab)
    _demo_generate(model, vocab, text, cfg["length"], args.seed)
    return 0


def _zen_of_python():
    """The Zen of Python (``import this``), decoded without printing it."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


class _TimeBudget:
    """Callback that stops training once ``seconds`` have passed (checked after each epoch)."""

    def __init__(self, seconds):
        self.seconds, self.t0, self.stopped = seconds, time.perf_counter(), False

    def on_epoch_end(self, model, epoch, logs):
        """Stop the training if the time is up."""
        if time.perf_counter() - self.t0 > self.seconds:
            model.stop_training = self.stopped = True


def _demo_fit(model, x, y, cfg, seed):
    """Train the demo's model (within its time budget) and say how fast that went."""
    print(f"training on {len(x)} windows of {cfg['window']} characters (next character at "
          f"every step), batch {cfg['batch']}, Adam(lr={cfg['lr']}), {cfg['epochs']} epochs")
    sys.stdout.flush()
    budget = _TimeBudget(cfg["budget"])
    t0 = time.perf_counter()
    history = model.fit(x, y, loss="cce", optimizer=Adam(lr=cfg["lr"]),
                        epochs=cfg["epochs"], batch_size=cfg["batch"], clip_norm=5.0,
                        callbacks=[budget], verbose=1, seed=seed)
    seconds = time.perf_counter() - t0
    epochs = len(history.epoch)
    sequences = epochs * len(x)
    print()
    print(f"trained {epochs} epochs in {seconds:.1f} s: {sequences / seconds:,.0f} sequences/s "
          f"({sequences * cfg['window'] / seconds:,.0f} characters/s)"
          + (f", stopped by the {cfg['budget']:.0f} s time budget" if budget.stopped else ""))


def _demo_evaluate(model, x, y, text, vocab):
    """Print the loss and accuracy on the text, beside those of an untrained guess."""
    result = model.evaluate(x, y, metrics=("accuracy",))
    common = max(set(text), key=text.count)
    print(f"next-character prediction on the text: loss {result['loss']:.3f}, accuracy "
          f"{100 * result['accuracy']:.1f}%  (before training: loss {math.log(len(vocab)):.2f}; "
          f"always guessing {common!r}: {100 * text.count(common) / len(text):.1f}%)")


def _demo_generate(model, vocab, text, length, seed):
    """Print the model's continuations of the text's title, greedy and sampled."""
    start = np.array([vocab.encode(_DEMO_PROMPT)], np.int64)
    greedy = _DEMO_PROMPT + vocab.decode(model.generate(start, length, greedy=True)[0])
    match = _common_prefix(greedy, text) - len(_DEMO_PROMPT)
    print()
    print(f"greedy continuation of {_DEMO_PROMPT!r} (the original text for {max(match, 0)} of "
          f"{length} characters):")
    print(_indent(greedy))
    print()
    sampled = _DEMO_PROMPT + vocab.decode(model.generate(start, length,
                                                         temperature=_DEMO_TEMPERATURE,
                                                         seed=seed)[0])
    print(f"sampled with temperature {_DEMO_TEMPERATURE} (seed {seed}):")
    print(_indent(sampled))


def _indent(text, prefix="    | "):
    return "\n".join(prefix + line for line in text.split("\n"))


def _common_prefix(a, b):
    """The number of leading characters ``a`` and ``b`` share."""
    n = 0
    for ca, cb in zip(a, b):
        if ca != cb:
            break
        n += 1
    return n


# ------------------------------------------------------------------------------ trained models

def _load(path, command, tasks):
    """A model saved by ``fastrnn train`` whose task is one of ``tasks``."""
    try:
        model = load_model(path)
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


# ------------------------------------------------------------------------------ predict

def cmd_predict(args):
    """Forecast the next values of a series, or label texts, with a trained model."""
    model = _load(args.model, "predict", ("forecast", "classify"))
    if model.info["task"] == "forecast":
        _forecast(model, args)
    else:
        _classify(model, args)
    return 0


def _forecast(model, args):
    """Print the next ``--steps`` values of the series, each prediction fed back."""
    info = model.info
    with _model_info(args.model):
        window, mean, std = int(info["window"]), float(info["mean"]), float(info["std"])
        preferred = info.get("column")
    values, _ = read_series(args.data, args.column, preferred)
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


def _classify(model, args):
    """Print a label for each text; with labels in the file, the accuracy on stderr."""
    if args.steps is not None:
        raise CLIError("--steps applies to forecast models only")
    if args.column is not None:
        raise CLIError("--column applies to forecast models only")
    with _model_info(args.model):
        vocab = Vocabulary.from_dict(model.info["vocabulary"])
        names = [str(n) for n in model.info["labels"]]
        maxlen = int(model.info["maxlen"])
    texts, labels = read_texts(args.data)
    x, lengths = encode_texts(vocab, texts, maxlen)
    p = model.predict(x, lengths=lengths)
    idx = (p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else p.argmax(axis=1)
    predicted = [names[i] for i in idx]
    print("\n".join(predicted))
    if labels is not None and all(label in names for label in labels):
        right = sum(a == b for a, b in zip(predicted, labels))
        print(f"accuracy on the {len(labels)} labelled rows: {100 * right / len(labels):.1f}%",
              file=sys.stderr)


# ------------------------------------------------------------------------------ generate

def cmd_generate(args):
    """Write text with a character-level language model."""
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
