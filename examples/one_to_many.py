"""One-to-many: generate text one character at a time from a start character.

A character-level LSTM learns a short text; given only its first character it writes the text
back, greedily (the most likely next character) or by sampling with a temperature.

Run: ``python examples/one_to_many.py``
"""
import numpy as np

import fastrnn
from fastrnn.text import Vocabulary

TEXT = "hello world, hello rnn. "


def run(epochs=60, seed=0, verbose=1):
    """Train on windows of the repeated text; returns greedy and sampled continuations."""
    vocab = Vocabulary.build([TEXT], level="char")
    ids = np.array(vocab.encode(TEXT * 8))
    window = 24
    starts = np.arange(0, len(ids) - window - 1)
    x = np.stack([ids[s:s + window] for s in starts])          # input characters
    y = np.stack([ids[s + 1:s + window + 1] for s in starts])  # the next character at each step
    model = fastrnn.Sequential([
        fastrnn.Embedding(len(vocab), 16, seed=seed),
        fastrnn.LSTM(16, 48, seed=seed),
        fastrnn.Dense(48, len(vocab), seed=seed),
    ])
    history = model.fit(x, y, loss="cce", optimizer=fastrnn.optim.Adam(lr=0.01), epochs=epochs,
                        batch_size=32, verbose=verbose, seed=seed)
    start = np.array([vocab.token_to_id("h")])
    greedy = vocab.decode(model.generate(start, len(TEXT) - 1, greedy=True)[0])
    sampled = vocab.decode(model.generate(start, len(TEXT) - 1, temperature=0.5, seed=seed)[0])
    return {"loss": history["loss"][-1], "greedy": "h" + greedy, "sampled": "h" + sampled}


if __name__ == "__main__":
    print(run())
