"""An LSTM and a small transformer encoder on the same task, at two sequence lengths.

The task: a log of events (token ids) in which a door is opened once and closed once, at random
places among other events; the question is whether it was opened before it was closed. The
answer depends only on the order of the two events, so a bag of words cannot solve it: the LSTM
must remember across the gap which of the two it saw first, and the transformer must compare
the positions of the two (the positional encoding is what tells them apart; the mean over the
valid steps then sees the result of that comparison).

Both models have about the same number of parameters (about 8.5 thousand in the layers after the
embedding) and are trained alike (Adam, the same data, the same epochs):

- ``Embedding -> LSTM(return_sequences=False) -> Dense``: one step after the other, ``T``
  sequential steps each as cheap as a small matrix product;
- ``Embedding -> PositionalEncoding -> TransformerEncoderLayer -> GlobalAveragePooling1D ->
  Dense``: every step at once, but the attention scores of each sequence are a ``T x T``
  matrix, so its cost grows as ``T^2`` where the LSTM's grows as ``T``.

Each epoch sees the same training sequences; lengths vary between ``T/2`` and ``T``.

Run: ``python examples/lstm_vs_transformer.py`` (about 40 seconds on one core).
"""
import time

import numpy as np

import fastrnn

PAD, OPEN, CLOSE = 0, 1, 2          # 3..VOCAB-1 are the other events
VOCAB = 16
EMBED = 32                          # d_model of the transformer, input size of the LSTM
HIDDEN = 32                         # LSTM units
HEADS, FEEDFORWARD = 4, 64
BATCH = 64


def make_data(n, timesteps, rng):
    """``n`` event logs of ``timesteps // 2`` to ``timesteps`` events, padded to ``timesteps``;
    the label is 1 if the door was opened (token 1) before it was closed (token 2)."""
    lengths = rng.integers(timesteps // 2, timesteps + 1, size=n)
    x = rng.integers(3, VOCAB, size=(n, timesteps))
    y = rng.integers(0, 2, size=n)
    for i, length in enumerate(lengths):
        first, second = np.sort(rng.choice(length, size=2, replace=False))
        x[i, first], x[i, second] = (OPEN, CLOSE) if y[i] else (CLOSE, OPEN)
        x[i, length:] = PAD
    return x, y, lengths


def lstm_model(seed):
    return fastrnn.Sequential([
        fastrnn.Embedding(VOCAB, EMBED, padding_idx=PAD, seed=seed),
        fastrnn.LSTM(EMBED, HIDDEN, return_sequences=False, seed=seed),
        fastrnn.Dense(HIDDEN, 2, seed=seed),
    ])


def transformer_model(timesteps, seed):
    return fastrnn.Sequential([
        fastrnn.Embedding(VOCAB, EMBED, padding_idx=PAD, seed=seed),
        fastrnn.PositionalEncoding(timesteps, EMBED),
        fastrnn.TransformerEncoderLayer(EMBED, HEADS, FEEDFORWARD, seed=seed),
        fastrnn.GlobalAveragePooling1D(),
        fastrnn.Dense(EMBED, 2, seed=seed),
    ])


def warm_up(x, y, lengths, timesteps, seed):
    """One training batch and one prediction of throwaway models of both kinds, so that the
    timings leave out what only the first call pays (importing and compiling the backward
    kernels)."""
    for model in (lstm_model(seed), transformer_model(timesteps, seed)):
        model.fit(x[:BATCH], y[:BATCH], lengths=lengths[:BATCH], loss="cce",
                  optimizer=fastrnn.optim.Adam(), epochs=1,
                  batch_size=BATCH, verbose=0)
        model.predict(x[:BATCH], lengths[:BATCH])


def inference_ms(model, x, lengths, repeats):
    """The best of ``repeats`` timings of ``predict`` on one batch, in milliseconds."""
    model.predict(x, lengths, batch_size=len(x))        # warm up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(x, lengths, batch_size=len(x))
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def run(lengths=(32, 128), n_train=2048, n_test=512, epochs=10, lr=0.005, seed=0, verbose=1,
        repeats=20):
    """Train both models at each sequence length and measure them.

    Parameters
    ----------
    lengths : tuple of int
        The sequence lengths ``T`` (each sequence has ``T // 2`` to ``T`` events).
    n_train, n_test : int
        Training and held-out sequences.
    epochs : int
    lr : float
        Adam's learning rate, for both models.
    seed : int
    verbose : int
        As for ``fit``.
    repeats : int
        Inference timings taken (the best is kept).

    Returns
    -------
    dict
        ``results[T]["lstm" or "transformer"]``: ``accuracy`` (held out),
        ``train_s_per_epoch``, ``infer_ms_per_batch`` (``predict`` on a batch of 64), and
        ``parameters`` (without the embedding's).
    """
    results = {}
    for timesteps in lengths:
        rng = np.random.default_rng([seed, timesteps])
        x, y, len_train = make_data(n_train, timesteps, rng)
        x_test, y_test, len_test = make_data(n_test, timesteps, rng)
        results[timesteps] = {}
        warm_up(x, y, len_train, timesteps, seed)
        for name, model in (("lstm", lstm_model(seed)),
                            ("transformer", transformer_model(timesteps, seed))):
            start = time.perf_counter()
            model.fit(x, y, lengths=len_train, loss="cce", optimizer=fastrnn.optim.Adam(lr=lr),
                      epochs=epochs, batch_size=BATCH, clip_norm=5.0, verbose=verbose, seed=seed)
            seconds = time.perf_counter() - start
            accuracy = model.evaluate(x_test, y_test, lengths=len_test,
                                      metrics=("accuracy",))["accuracy"]
            results[timesteps][name] = {
                "accuracy": float(accuracy),
                "train_s_per_epoch": seconds / epochs,
                "infer_ms_per_batch": inference_ms(model, x_test[:BATCH], len_test[:BATCH],
                                                   repeats),
                "parameters": sum(p.size for p in model.parameters().values())
                - VOCAB * EMBED,
            }
    return results


def table(results):
    """The results as a Markdown table."""
    rows = ["| T | model | parameters | test accuracy | training s / epoch | "
            f"inference ms / batch of {BATCH} |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for timesteps, models in results.items():
        for name, r in models.items():
            rows.append(f"| {timesteps} | {name} | {r['parameters']:,} | {r['accuracy']:.1%} | "
                        f"{r['train_s_per_epoch']:.2f} | {r['infer_ms_per_batch']:.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(run(verbose=0)))
