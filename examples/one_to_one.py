"""One-to-one: one input, one output (the degenerate case, a feed-forward network).

An RNN over a single timestep is a one-hidden-layer network: here it tells whether a point lies
inside the unit circle.

Run: ``python examples/one_to_one.py``
"""
import numpy as np

import fastrnn


def make_data(n, rng):
    points = rng.uniform(-1.5, 1.5, size=(n, 1, 2))       # (batch, 1 timestep, 2 features)
    return points, (np.sum(points[:, 0] ** 2, axis=1) < 1).astype(np.int64)


def run(epochs=40, seed=0, verbose=1):
    """Train and evaluate; returns the held-out accuracy."""
    rng = np.random.default_rng(seed)
    x, y = make_data(1000, rng)
    x_test, y_test = make_data(300, rng)
    model = fastrnn.Sequential([
        fastrnn.RNN(2, 32, return_sequences=False, seed=seed),
        fastrnn.Dense(32, 1, activation="sigmoid", seed=seed),
    ])
    model.fit(x, y, loss="bce", optimizer=fastrnn.optim.Adam(lr=0.02), epochs=epochs,
              batch_size=32, verbose=verbose, seed=seed)
    return model.evaluate(x_test, y_test, metrics=("accuracy",))


if __name__ == "__main__":
    print(run())
