"""Attention on long inputs: reversing strings of 30 to 60 digits.

The same encoder-decoder (GRUs of 64 units) is trained twice on the same data: once without
attention, where the decoder sees the source only through the encoder's final state, and once
with Luong's attention over every encoder output. One state of 64 numbers cannot carry 60
digits in order, and the plain model reverses none of the held-out strings exactly; with
attention the decoder looks up the digit it needs at each step (the alignment heat map is an
anti-diagonal) and reverses most strings exactly.

Each epoch sees 4000 freshly generated strings (so nothing is memorised), with Adam and a
learning rate of 0.01 that decays by 0.85 each epoch. Decoding is greedy, and by beam search of width 4.

Run: ``python examples/seq2seq_attention.py`` (writes ``docs/seq2seq_attention.png``, needs
matplotlib for that).
"""
import time
from pathlib import Path

import numpy as np

import fastrnn

PAD, BOS, EOS = 0, 1, 2
DIGITS = 10                         # digit d is token d + 3
VOCAB = DIGITS + 3
MIN_LEN, MAX_LEN = 30, 60
HEATMAP = Path(__file__).resolve().parent.parent / "docs" / "seq2seq_attention.png"


def make_data(n, rng):
    """``n`` random digit strings of 30 to 60 digits and their reversals, ended by <eos>."""
    sources = [rng.integers(3, 3 + DIGITS, size=rng.integers(MIN_LEN, MAX_LEN + 1))
               for _ in range(n)]
    return sources, [np.append(s[::-1], EOS) for s in sources]


def exact_match(decoded, targets):
    """The fraction of sequences decoded exactly (every token up to and including <eos>)."""
    return float(np.mean([list(d[:len(t)]) == list(t) for d, t in zip(decoded, targets)]))


def train(attention, epochs, n_per_epoch, seed, verbose):
    """A model trained on fresh data each epoch, and the seconds it took."""
    model = fastrnn.EncoderDecoder(VOCAB, VOCAB, embedding_dim=16, hidden_size=64, cell="gru",
                                   bos_id=BOS, eos_id=EOS, seed=seed, attention=attention)
    optimizer = fastrnn.optim.Adam(lr=0.01)
    schedule = fastrnn.optim.ExponentialLR(optimizer, gamma=0.85)
    rng = np.random.default_rng([seed, 1])
    start = time.perf_counter()
    for epoch in range(epochs):
        src, tgt = make_data(n_per_epoch, rng)
        model.fit(src, tgt, optimizer=optimizer, epochs=epoch + 1, batch_size=32,
                  clip_norm=5.0, verbose=verbose, seed=seed)
        schedule.step()
    return model, time.perf_counter() - start


def run(epochs=16, n_per_epoch=4000, seed=0, verbose=1, heatmap=None):
    """Train both models and measure them on 200 held-out strings.

    Parameters
    ----------
    epochs, n_per_epoch : int
    seed : int
    verbose : int
        As for ``fit``.
    heatmap : str or Path, optional
        Where to draw the attention of one held-out string (needs matplotlib).

    Returns
    -------
    dict
        For ``"attention"`` and ``"plain"``: ``exact_match`` (greedy), ``beam_exact_match``
        (beam search, width 4), ``token_accuracy`` (teacher-forced) and ``train_seconds``.
    """
    src_test, tgt_test = make_data(200, np.random.default_rng([seed, 2]))
    results = {}
    for name, attention in (("attention", "luong"), ("plain", None)):
        model, seconds = train(attention, epochs, n_per_epoch, seed, verbose)
        results[name] = {
            "exact_match": exact_match(model.predict(src_test, max_length=MAX_LEN + 1),
                                       tgt_test),
            "beam_exact_match": exact_match(model.predict(src_test, max_length=MAX_LEN + 1,
                                                          beam_width=4), tgt_test),
            "token_accuracy": model.evaluate(src_test, tgt_test,
                                             metrics=("accuracy",))["accuracy"],
            "train_seconds": round(seconds, 1),
        }
        if attention is not None and heatmap is not None:
            from fastrnn.plot import attention_heatmap

            source = src_test[np.argmin([len(s) for s in src_test])]     # the shortest
            tokens, weights = model.predict([source], max_length=MAX_LEN + 1,
                                            return_attention=True)
            steps = list(tokens[0]).index(EOS) + 1 if EOS in tokens[0] else MAX_LEN + 1
            text = lambda ids: [str(t - 3) if t >= 3 else "<eos>" for t in ids]  # noqa: E731
            attention_heatmap(heatmap, weights[0, :steps], text(source), text(tokens[0, :steps]),
                              title=f"Luong attention, reversing {len(source)} digits")
    return results


if __name__ == "__main__":
    print(run(verbose=0, heatmap=HEATMAP))
