"""Many-to-many, unequal lengths: an encoder-decoder that reverses digit strings.

The encoder GRU reads "3 1 4"; its final state starts the decoder GRU, which writes "4 1 3" and
an end token. Trained with teacher forcing, decoded greedily.

Run: ``python examples/seq2seq_reverse.py``
"""
import numpy as np

import fastrnn

PAD, BOS, EOS = 0, 1, 2
DIGITS = 6                          # digit d is token d + 3
VOCAB = DIGITS + 3


def make_data(n, rng, min_len=2, max_len=5):
    sources, targets = [], []
    for _ in range(n):
        digits = rng.integers(0, DIGITS, size=rng.integers(min_len, max_len + 1)) + 3
        sources.append(digits)
        targets.append(np.append(digits[::-1], EOS))
    return sources, targets


def run(epochs=30, seed=0, verbose=1):
    """Train and evaluate; returns the fraction of held-out strings reversed exactly."""
    rng = np.random.default_rng(seed)
    src, tgt = make_data(1500, rng)
    src_test, tgt_test = make_data(200, rng)
    model = fastrnn.EncoderDecoder(VOCAB, VOCAB, embedding_dim=16, hidden_size=64, cell="gru",
                                   bos_id=BOS, eos_id=EOS, seed=seed)
    history = model.fit(src, tgt, optimizer=fastrnn.optim.Adam(lr=0.01), epochs=epochs,
                        batch_size=32, clip_norm=5.0, verbose=verbose, seed=seed)
    decoded = model.predict(src_test, max_length=8)
    exact = np.mean([list(d[:len(t)]) == list(t) for d, t in zip(decoded, tgt_test)])
    return {"loss": history["loss"][-1], "exact_match": float(exact)}


if __name__ == "__main__":
    print(run())
