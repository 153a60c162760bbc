"""Text utilities: vocabularies, one-hot encoding and padding of variable-length sequences.

A :class:`Vocabulary` maps tokens (words or characters) to integer ids and back, with a padding
id (0) and an unknown id (1) by default; :func:`one_hot` turns ids into one-hot vectors;
:func:`pad_sequences` packs a list of sequences of different lengths into one batch-first array
plus the ``lengths`` that the layers take. The vocabulary lives in
:mod:`fastrnn.text.vocabulary`, the rest in :mod:`fastrnn.text.sequences`; every name is
importable from here.

Examples
--------
>>> from fastrnn.text import Vocabulary, pad_sequences
>>> vocab = Vocabulary.build(["the cat sat", "the dog sat down"])
>>> vocab.tokens
['<pad>', '<unk>', 'sat', 'the', 'cat', 'dog', 'down']
>>> vocab.encode("the cat ran")
[3, 4, 1]
>>> vocab.decode([3, 4, 1])
'the cat'
>>> x, lengths = pad_sequences([vocab.encode("the cat sat"), vocab.encode("the dog")])
>>> x
array([[3, 4, 2],
       [3, 5, 0]])
>>> lengths
array([3, 2])
"""
from .sequences import one_hot, pad_sequences, ragged_to_padded
from .vocabulary import WORD_PATTERN, Vocabulary

__all__ = ["WORD_PATTERN", "Vocabulary", "one_hot", "pad_sequences", "ragged_to_padded"]
