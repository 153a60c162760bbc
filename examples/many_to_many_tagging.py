"""Many-to-many, equal lengths: a label for every timestep (sequence tagging).

Each step of a noisy sensor stream is tagged "rising" when the signal is above its value two
steps earlier. A bidirectional LSTM sees the whole stream and tags each step; padded steps of
shorter streams are neither computed nor counted in the loss.

Run: ``python examples/many_to_many_tagging.py``
"""
import numpy as np

import fastrnn


def make_data(n, rng, max_len=20):
    lengths = rng.integers(5, max_len + 1, size=n)
    signal = np.cumsum(rng.standard_normal((n, max_len + 2)), axis=1)
    x = signal[:, 2:, None].astype(np.float32)
    y = (signal[:, 2:] > signal[:, :-2]).astype(np.int64)
    for i, length in enumerate(lengths):
        x[i, length:] = 0
        y[i, length:] = 0
    return x, y, lengths


def run(epochs=25, seed=0, verbose=1):
    """Train and evaluate; returns the per-step accuracy on held-out streams."""
    rng = np.random.default_rng(seed)
    x, y, lengths = make_data(600, rng)
    x_test, y_test, len_test = make_data(200, rng)
    model = fastrnn.Sequential([
        fastrnn.LSTM(1, 24, bidirectional=True, seed=seed),
        fastrnn.Dense(48, 2, activation="softmax", seed=seed),
    ])
    model.fit(x, y, lengths=lengths, loss="cce", optimizer=fastrnn.optim.Adam(lr=0.02),
              epochs=epochs, batch_size=32, verbose=verbose, seed=seed)
    return model.evaluate(x_test, y_test, lengths=len_test, metrics=("accuracy",))


if __name__ == "__main__":
    print(run())
