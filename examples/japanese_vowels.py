"""Speaker recognition on JapaneseVowels (UCR/UEA), against the same model in PyTorch.

Nine male speakers each uttered the Japanese vowels /ae/; every utterance is a sequence of 12
LPC cepstrum coefficients per frame, 7 to 29 frames long (270 utterances to train on, 370 to
test on; Kudo, Toyama and Shimbo 1999). The task is to say who spoke. The data set ships with
``sktime``, so this runs offline.

The sequences are kept ragged: a :class:`fastrnn.data.Loader` pads each batch only to its own
longest sequence and groups similar lengths (``bucket=``), and the LSTM computes no padded
step. The same model in PyTorch (``nn.LSTM`` on packed sequences, then ``nn.Linear``) starts
from the same weights (moved with ``state_dict``) and trains on the same batches in the same
order, with the same Adam; both report test accuracy and the time of an epoch.

Needs ``sktime`` (the data) and ``torch`` (the comparison), neither of which fastrnn needs::

    pip install sktime "torch==2.13.0"
    python examples/japanese_vowels.py [--epochs 30]
"""
import argparse
import sys
import time

import numpy as np

import fastrnn
from fastrnn.callbacks import Callback
from fastrnn.data import Loader, SequenceDataset

HIDDEN = 64
BATCH = 16
BUCKET = 4                  # sort lengths within chunks of 4 batches


def load_data():
    """The train and test splits: lists of ``(frames, 12)`` float32 arrays and their labels
    (the speaker, "1" to "9"), each coefficient standardised with the training set's mean and
    deviation."""
    from sktime.datasets import load_japanese_vowels

    splits = []
    for split in ("train", "test"):
        X, y = load_japanese_vowels(split=split, return_X_y=True)   # nested DataFrame
        seqs = [np.stack([np.asarray(X.iloc[i, c], dtype=np.float64)
                          for c in range(X.shape[1])], axis=1) for i in range(len(X))]
        splits.append((seqs, np.asarray(y).astype(str)))
    steps = np.concatenate(splits[0][0])
    mean, std = steps.mean(axis=0), steps.std(axis=0)
    return [([((s - mean) / std).astype(np.float32) for s in seqs], labels)
            for seqs, labels in splits]


class EpochTimer(Callback):
    """Wall-clock seconds of each training epoch (batches and updates only)."""

    def __init__(self):
        self.seconds = []

    def on_epoch_begin(self, model, epoch, logs):
        self._start = time.perf_counter()

    def on_epoch_end(self, model, epoch, logs):
        self.seconds.append(time.perf_counter() - self._start)


def torch_model(torch, model):
    """``nn.LSTM`` + ``nn.Linear`` holding ``model``'s weights (PyTorch's names and shapes)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(model.layers[0].input_size, HIDDEN, batch_first=True)
            self.linear = torch.nn.Linear(HIDDEN, model.layers[1].out_features)

        def forward(self, x, lengths):
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                             enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            return self.linear(h[-1])           # the state at each sequence's last frame

    net = Net()
    weights = {("lstm." if k.startswith("0.") else "linear.") + k[2:]: torch.from_numpy(v)
               for k, v in model.state_dict().items()}
    net.load_state_dict(weights)
    return net


def train_torch(torch, net, loader, classes, epochs, lr):
    """Adam on the batches ``loader`` gives epoch by epoch; the seconds of each epoch."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)                 # what fit does: the same batches, same order
        start = time.perf_counter()
        for x, y, lengths in loader:
            optimizer.zero_grad()
            loss = loss_fn(net(torch.from_numpy(x), torch.from_numpy(lengths)),
                           torch.from_numpy(np.searchsorted(classes, y)))
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def torch_accuracy(torch, net, seqs, labels, classes):
    x, _, lengths = SequenceDataset(seqs, labels).batch(np.arange(len(seqs)))
    with torch.no_grad():
        logits = net(torch.from_numpy(x), torch.from_numpy(lengths))
    return float(np.mean(classes[logits.argmax(1).numpy()] == labels))


def run(epochs=30, lr=0.005, seed=0, verbose=1):
    """Train both models; returns, for "fastrnn" and "torch", the test accuracy, the median
    seconds of a training epoch and the total training seconds.

    Raises
    ------
    ImportError
        If sktime or torch is not installed (with what to install).
    """
    try:
        import sktime  # noqa: F401
        import torch
    except ImportError as exc:
        raise ImportError(f"examples/japanese_vowels.py needs sktime (the data set) and torch "
                          f"(the comparison): pip install sktime \"torch==2.13.0\" "
                          f"({exc})") from None
    (train_x, train_y), (test_x, test_y) = load_data()
    classes = np.unique(train_y)

    def loader():
        return Loader(SequenceDataset(train_x, train_y), batch_size=BATCH, shuffle=True,
                      bucket=BUCKET, seed=seed)

    model = fastrnn.Sequential([fastrnn.LSTM(train_x[0].shape[1], HIDDEN,
                                             return_sequences=False, seed=seed),
                                fastrnn.Dense(HIDDEN, len(classes), seed=seed)])
    net = torch_model(torch, model)             # before training: the same initial weights

    timer = EpochTimer()
    start = time.perf_counter()
    model.fit(loader(), loss="cce", optimizer=fastrnn.optim.Adam(lr=lr), epochs=epochs,
              classes=classes, callbacks=[timer], verbose=verbose)
    total = time.perf_counter() - start
    test = Loader(SequenceDataset(test_x, test_y), batch_size=len(test_x))
    results = {"fastrnn": {"accuracy": model.evaluate(test, metrics=("accuracy",))["accuracy"],
                           "s_per_epoch": float(np.median(timer.seconds)),
                           "train_s": total}}

    start = time.perf_counter()
    seconds = train_torch(torch, net, loader(), classes, epochs, lr)
    results["torch"] = {"accuracy": torch_accuracy(torch, net, test_x, test_y, classes),
                        "s_per_epoch": float(np.median(seconds)),
                        "train_s": time.perf_counter() - start}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        results = run(epochs=args.epochs, seed=args.seed, verbose=2)
    except ImportError as exc:
        sys.exit(str(exc))
    import torch

    print(f"JapaneseVowels, LSTM({HIDDEN}) + Dense, {args.epochs} epochs, batches of {BATCH}; "
          f"threads: fastrnn {fastrnn.get_num_threads()}, torch {torch.get_num_threads()}")
    print(f"{'':8} {'test accuracy':>14} {'s / epoch':>10} {'train s':>8}")
    for name, r in results.items():
        print(f"{name:8} {r['accuracy']:14.3f} {r['s_per_epoch']:10.4f} {r['train_s']:8.2f}")


if __name__ == "__main__":
    main()
