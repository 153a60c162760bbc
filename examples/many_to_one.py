"""Many-to-one: classify variable-length token sequences (a toy sentiment task).

A "review" is a sequence of word ids; it is positive when it holds more "good" words than
"bad" ones. An Embedding -> GRU -> Dense(sigmoid) model reads each review up to its own length
(no computation on padding) and says positive or negative.

Run: ``python examples/many_to_one.py``
"""
import numpy as np

import fastrnn

GOOD, BAD, VOCAB = 2, 3, 12          # 0 is padding; 1, 4..11 are neutral words


def make_data(n, rng, max_len=12):
    lengths = rng.integers(3, max_len + 1, size=n)
    x = np.zeros((n, max_len), np.int64)
    y = np.zeros(n, np.int64)
    for i, length in enumerate(lengths):
        while True:
            words = rng.choice([1, GOOD, BAD] + list(range(4, VOCAB)), size=length)
            good, bad = (words == GOOD).sum(), (words == BAD).sum()
            if good != bad:
                break
        x[i, :length] = words
        y[i] = good > bad
    return x, y, lengths


def run(epochs=15, seed=0, verbose=1):
    """Train and evaluate; returns the held-out accuracy and loss."""
    rng = np.random.default_rng(seed)
    x, y, lengths = make_data(1200, rng)
    x_test, y_test, len_test = make_data(300, rng)
    model = fastrnn.Sequential([
        fastrnn.Embedding(VOCAB, 8, padding_idx=0, seed=seed),
        fastrnn.GRU(8, 24, return_sequences=False, seed=seed),
        fastrnn.Dense(24, 1, activation="sigmoid", seed=seed),
    ])
    model.fit(x, y, lengths=lengths, loss="bce", optimizer=fastrnn.optim.Adam(lr=0.02),
              epochs=epochs, batch_size=32, verbose=verbose, metrics=("accuracy",), seed=seed)
    return model.evaluate(x_test, y_test, lengths=len_test, metrics=("accuracy",))


if __name__ == "__main__":
    print(run())
