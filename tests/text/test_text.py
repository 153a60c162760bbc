"""Tests of fastrnn.text: Vocabulary, one_hot, pad_sequences, ragged_to_padded."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrnn.text import WORD_PATTERN, Vocabulary, one_hot, pad_sequences, ragged_to_padded

CORPUS = ["The cat sat on the mat.", "The dog sat, the cat ran!", "a cat"]


# --------------------------------------------------------------------------- Vocabulary


def test_word_vocabulary_order_and_ids():
    vocab = Vocabulary.build(CORPUS)
    # counts: cat 3, sat 2, the 2, The 2, then 1 each; ties in code point order
    assert vocab.tokens == [
        "<pad>", "<unk>", "cat", "The", "sat", "the",
        "!", ",", ".", "a", "dog", "mat", "on", "ran",
    ]
    assert vocab.pad_id == 0 and vocab.unk_id == 1
    assert len(vocab) == 14
    assert vocab.token_to_id("cat") == 2
    assert vocab.id_to_token(4) == "sat"
    assert vocab.special_ids == {0, 1}


def test_order_does_not_depend_on_text_order():
    assert Vocabulary.build(CORPUS).tokens == Vocabulary.build(CORPUS[::-1]).tokens


def test_word_round_trip_and_unknowns():
    vocab = Vocabulary.build(CORPUS)
    ids = vocab.encode("the cat sat on the mat.")
    assert ids == [5, 2, 4, 12, 5, 11, 8]
    assert vocab.decode(ids) == "the cat sat on the mat ."
    assert vocab.encode("the zebra  sat") == [5, 1, 4]
    assert vocab.decode([5, 1, 4]) == "the sat"
    assert vocab.decode([5, 1, 4], skip_specials=False) == "the <unk> sat"
    assert vocab.decode([0, 5, 0, 0]) == "the"
    assert vocab.decode(np.array([5, 2], dtype=np.int32)) == "the cat"
    assert vocab.decode([]) == ""
    assert vocab.token_to_id("zebra") == vocab.unk_id
    assert "cat" in vocab and "zebra" not in vocab


def test_default_word_tokeniser():
    vocab = Vocabulary([])
    assert vocab.tokenize("Don't stop, it's 3.5 o'clock!\n  ok_go") == [
        "Don't", "stop", ",", "it's", "3", ".", "5", "o'clock", "!", "ok_go",
    ]
    assert vocab.tokenize("naïve café") == ["naïve", "café"]
    assert WORD_PATTERN


def test_lower():
    vocab = Vocabulary.build(CORPUS, lower=True)
    assert "The" not in vocab
    assert vocab.tokens[2:4] == ["the", "cat"]  # the 4, cat 3
    assert vocab.encode("THE Cat") == [2, 3]


def test_char_level_round_trip():
    text = "hello world\nhi"
    vocab = Vocabulary.build([text], level="char")
    assert vocab.tokens[:5] == ["<pad>", "<unk>", "l", "h", "o"]
    assert set(vocab.tokens[2:]) == set(text)
    ids = vocab.encode(text)
    assert len(ids) == len(text)
    assert vocab.decode(ids) == text
    assert vocab.encode("hz") == [3, 1]
    assert vocab.decode(vocab.encode("hz")) == "h"


def test_min_freq_and_max_size():
    vocab = Vocabulary.build(CORPUS, min_freq=2)
    assert vocab.tokens == ["<pad>", "<unk>", "cat", "The", "sat", "the"]
    vocab = Vocabulary.build(CORPUS, max_size=4)
    assert vocab.tokens == ["<pad>", "<unk>", "cat", "The"]
    vocab = Vocabulary.build(CORPUS, max_size=2)
    assert vocab.tokens == ["<pad>", "<unk>"]
    assert vocab.encode("the cat") == [1, 1]
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(CORPUS, max_size=1)
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build(CORPUS, min_freq=0)
    with pytest.raises(TypeError, match="min_freq"):
        Vocabulary.build(CORPUS, min_freq=1.5)


def test_specials():
    vocab = Vocabulary.build(
        ["<bos> a b <eos>"], specials=("[PAD]", "[UNK]"), extra_specials=("<bos>", "<eos>"),
        tokenizer=str.split,
    )
    assert vocab.tokens == ["[PAD]", "[UNK]", "<bos>", "<eos>", "a", "b"]
    assert vocab.encode("<bos> a c <eos>") == [2, 4, 1, 3]
    assert vocab.decode([2, 4, 1, 3, 0]) == "a"
    assert vocab.decode([2, 4, 1, 3, 0], skip_specials=False) == "<bos> a [UNK] <eos> [PAD]"
    assert vocab.special_ids == {0, 1, 2, 3}


def test_no_unknown_token():
    vocab = Vocabulary.build(["ab"], level="char", specials=("<pad>",))
    assert vocab.pad_id == 0 and vocab.unk_id is None
    assert vocab.encode("ba") == [2, 1]
    with pytest.raises(KeyError, match="'c'"):
        vocab.encode("abc")
    with pytest.raises(KeyError):
        vocab.token_to_id("c")
    vocab = Vocabulary.build(["ab"], level="char", specials=())
    assert vocab.pad_id is None and vocab.tokens == ["a", "b"]


def test_custom_tokenizer():
    vocab = Vocabulary.build(["a-b a-c"], tokenizer=lambda s: s.split("-"))
    assert vocab.tokens == ["<pad>", "<unk>", "a", "b a", "c"]
    with pytest.raises(TypeError, match="tokenizer must return"):
        Vocabulary.build(["x"], tokenizer=lambda s: s)
    with pytest.raises(ValueError, match="tokenizer"):
        Vocabulary.build(["x"], level="char", tokenizer=str.split)
    with pytest.raises(TypeError, match="tokenizer"):
        Vocabulary.build(["x"], tokenizer="split")


@pytest.mark.parametrize("level", ["word", "char"])
def test_to_dict_from_dict(level):
    vocab = Vocabulary.build(CORPUS, level=level, lower=True, extra_specials=("<eos>",))
    d = vocab.to_dict()
    d2 = json.loads(json.dumps(d))
    again = Vocabulary.from_dict(d2)
    assert again == vocab
    assert again.tokens == vocab.tokens
    assert again.level == level and again.lower is True
    assert again.encode("The cat, the DOG") == vocab.encode("The cat, the DOG")
    assert again.decode(range(len(vocab))) == vocab.decode(range(len(vocab)))


def test_from_dict_custom_tokenizer_must_be_passed_again():
    vocab = Vocabulary.build(["a b"], tokenizer=str.split)
    d = json.loads(json.dumps(vocab.to_dict()))
    assert d["custom_tokenizer"] is True
    loaded = Vocabulary.from_dict(d)
    assert loaded.decode([2, 3]) == "a b"
    with pytest.raises(ValueError, match="custom tokenizer"):
        loaded.encode("a b")
    assert Vocabulary.from_dict(d, tokenizer=str.split).encode("b a") == [3, 2]


def test_from_dict_errors():
    with pytest.raises(TypeError, match="d must be a dict"):
        Vocabulary.from_dict([1])
    with pytest.raises(ValueError, match="missing keys"):
        Vocabulary.from_dict({"tokens": []})
    d = Vocabulary.build(["a"]).to_dict()
    with pytest.raises(ValueError, match="version 99"):
        Vocabulary.from_dict({**d, "version": 99})
    with pytest.raises(ValueError, match="appears twice"):
        Vocabulary.from_dict({**d, "tokens": ["a", "a"]})
    with pytest.raises(ValueError, match="level"):
        Vocabulary.from_dict({**d, "level": "byte"})


def test_vocabulary_input_errors():
    with pytest.raises(TypeError, match="single string"):
        Vocabulary.build("the cat")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        Vocabulary.build(["a", 3])
    with pytest.raises(TypeError, match="texts must be an iterable"):
        Vocabulary.build(5)
    with pytest.raises(ValueError, match="level"):
        Vocabulary.build(["a"], level="words")
    with pytest.raises(TypeError, match=r"specials\[1\]"):
        Vocabulary.build(["a"], specials=("<pad>", ""))
    with pytest.raises(ValueError, match="appears twice"):
        Vocabulary.build(["a"], specials=("<pad>", "<unk>"), extra_specials=("<pad>",))
    with pytest.raises(TypeError, match="lower"):
        Vocabulary.build(["a"], lower="yes")
    vocab = Vocabulary.build(["a b"])
    with pytest.raises(TypeError, match="text must be a string"):
        vocab.encode(["a"])
    with pytest.raises(ValueError, match=r"ids\[1\] = 4 is out of range"):
        vocab.decode([2, 4])
    with pytest.raises(ValueError, match=r"ids\[0\] = -1"):
        vocab.decode([-1])
    with pytest.raises(TypeError, match="ids must be a flat sequence of integers"):
        vocab.decode([1.0, 2.0])
    with pytest.raises(TypeError, match="ids must be a flat sequence"):
        vocab.decode([[1, 2]])
    with pytest.raises(ValueError, match="index must be in 0..3"):
        vocab.id_to_token(4)
    with pytest.raises(TypeError, match="index must be an integer"):
        vocab.id_to_token("a")
    with pytest.raises(TypeError, match="token must be a string"):
        vocab.token_to_id(2)


def test_special_strings_in_text_are_not_counted():
    vocab = Vocabulary.build(["<pad> x"], tokenizer=str.split)
    assert vocab.tokens == ["<pad>", "<unk>", "x"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(alphabet="abc xyz.,!", max_size=20), min_size=1, max_size=5))
def test_char_round_trip_property(texts):
    vocab = Vocabulary.build(texts, level="char")
    for text in texts:
        assert vocab.decode(vocab.encode(text)) == text
    counts = [sum(t.count(tok) for t in texts) for tok in vocab.tokens[2:]]
    assert counts == sorted(counts, reverse=True)


# --------------------------------------------------------------------------- one_hot


def test_one_hot_shapes_and_values():
    out = one_hot([2, 0, 1], 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    ids = np.array([[0, 3], [2, 1]], dtype=np.uint8)
    out = one_hot(ids, 4, dtype="float64")
    assert out.shape == (2, 2, 4) and out.dtype == np.float64
    np.testing.assert_array_equal(out.argmax(-1), ids)
    np.testing.assert_array_equal(out.sum(-1), 1)
    assert one_hot(2, 3).tolist() == [0, 0, 1]
    assert one_hot(np.zeros((0, 5), dtype=int), 3).shape == (0, 5, 3)
    assert one_hot([1], 2, dtype=bool).tolist() == [[False, True]]


def test_one_hot_errors():
    with pytest.raises(ValueError, match=r"got 3 at index \(1,\)"):
        one_hot([0, 3], 3)
    with pytest.raises(ValueError, match=r"got -1 at index \(0, 1\)"):
        one_hot([[0, -1]], 3)
    with pytest.raises(TypeError, match="ids must be an array of integers"):
        one_hot([0.0, 1.0], 3)
    with pytest.raises(ValueError, match="num_classes"):
        one_hot([0], 0)
    with pytest.raises(TypeError, match="num_classes"):
        one_hot([0], 3.0)
    with pytest.raises(TypeError, match="dtype"):
        one_hot([0], 3, dtype="U3")


# --------------------------------------------------------------------------- pad_sequences

SEQS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]


def test_pad_post_default():
    x, lengths = pad_sequences(SEQS)
    assert x.dtype == np.int64 and lengths.dtype == np.int64
    np.testing.assert_array_equal(x, [[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [6, 7, 8, 9, 10]])
    np.testing.assert_array_equal(lengths, [3, 2, 5])
    assert x.flags.c_contiguous


def test_pad_pre():
    x, lengths = pad_sequences(SEQS, padding="pre", value=-1)
    np.testing.assert_array_equal(x, [[-1, -1, 1, 2, 3], [-1, -1, -1, 4, 5], [6, 7, 8, 9, 10]])
    np.testing.assert_array_equal(lengths, [3, 2, 5])


@pytest.mark.parametrize(
    "padding, truncating, expected",
    [
        ("post", "post", [[1, 2, 3], [4, 5, 0], [6, 7, 8]]),
        ("post", "pre", [[1, 2, 3], [4, 5, 0], [8, 9, 10]]),
        ("pre", "post", [[1, 2, 3], [0, 4, 5], [6, 7, 8]]),
        ("pre", "pre", [[1, 2, 3], [0, 4, 5], [8, 9, 10]]),
    ],
)
def test_truncation(padding, truncating, expected):
    x, lengths = pad_sequences(SEQS, maxlen=3, padding=padding, truncating=truncating)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(lengths, [3, 2, 3])


def test_maxlen_longer_than_all():
    x, lengths = pad_sequences([[1], [2, 3]], maxlen=4)
    np.testing.assert_array_equal(x, [[1, 0, 0, 0], [2, 3, 0, 0]])
    np.testing.assert_array_equal(lengths, [1, 2])


def test_float_sequences():
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((t, 3)).astype(np.float32) for t in (4, 1, 6)]
    x, lengths = pad_sequences(seqs)
    assert x.shape == (3, 6, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(lengths, [4, 1, 6])
    for row, seq in enumerate(seqs):
        np.testing.assert_array_equal(x[row, : len(seq)], seq)
        assert not x[row, len(seq):].any()
    x, lengths = pad_sequences(seqs, maxlen=2, padding="pre", truncating="pre", dtype="float64")
    assert x.dtype == np.float64
    np.testing.assert_array_equal(lengths, [2, 1, 2])
    np.testing.assert_array_equal(x[0], seqs[0][-2:])
    np.testing.assert_array_equal(x[1], np.vstack([np.zeros((1, 3)), seqs[1]]))
    # Python floats give float64; ints can be made float
    assert pad_sequences([[0.5], [1.0, 2.0]])[0].dtype == np.float64
    assert pad_sequences([[1], [2, 3]], dtype="float32")[0].dtype == np.float32


def test_rectangular_array_input():
    arr = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    x, lengths = pad_sequences(arr)
    np.testing.assert_array_equal(x, arr)
    np.testing.assert_array_equal(lengths, [4, 4])
    x, lengths = pad_sequences(arr, maxlen=6, padding="pre")
    np.testing.assert_array_equal(x[:, 2:], arr)
    assert not x[:, :2].any()
    x, lengths = pad_sequences(arr, maxlen=3, truncating="pre")
    np.testing.assert_array_equal(x, arr[:, 1:])
    np.testing.assert_array_equal(lengths, [3, 3])
    x, lengths = pad_sequences(np.array([[1, 2], [3, 4]]), maxlen=3)
    np.testing.assert_array_equal(x, [[1, 2, 0], [3, 4, 0]])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 99), min_size=1, max_size=8), min_size=1, max_size=5),
    st.one_of(st.none(), st.integers(1, 10)),
    st.sampled_from(["pre", "post"]),
    st.sampled_from(["pre", "post"]),
)
def test_pad_matches_simple_model(seqs, maxlen, padding, truncating):
    x, lengths = pad_sequences(seqs, maxlen=maxlen, padding=padding, truncating=truncating)
    T = maxlen if maxlen is not None else max(map(len, seqs))
    assert x.shape == (len(seqs), T)
    for row, seq in enumerate(seqs):
        kept = seq[:T] if truncating == "post" else seq[-T:]
        pad = [0] * (T - len(kept))
        assert x[row].tolist() == (kept + pad if padding == "post" else pad + kept)
        assert lengths[row] == len(kept)


def test_pad_errors():
    with pytest.raises(ValueError, match=r"sequences\[1\] is empty"):
        pad_sequences([[1], [], [2]])
    with pytest.raises(ValueError, match="sequences is empty"):
        pad_sequences([])
    with pytest.raises(ValueError, match="sequences is empty"):
        pad_sequences(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"sequences\[0\] is empty"):
        pad_sequences(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="padding"):
        pad_sequences(SEQS, padding="both")
    with pytest.raises(ValueError, match="truncating"):
        pad_sequences(SEQS, truncating="middle")
    with pytest.raises(ValueError, match="maxlen"):
        pad_sequences(SEQS, maxlen=0)
    with pytest.raises(TypeError, match="maxlen"):
        pad_sequences(SEQS, maxlen=2.5)
    with pytest.raises(ValueError, match=r"sequences\[1\] has shape \(2, 4\)"):
        pad_sequences([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"sequences\[1\] has shape \(2, 3\)"):
        pad_sequences([np.zeros(2), np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"sequences\[0\] must be 1-D"):
        pad_sequences([np.zeros((1, 2, 3))])
    with pytest.raises(TypeError, match=r"sequences\[0\] must be a sequence of numbers"):
        pad_sequences(["abc"])
    with pytest.raises(TypeError, match="got a string"):
        pad_sequences("abc")
    with pytest.raises(TypeError, match=r"sequences\[1\] must hold real numbers"):
        pad_sequences([[1], [None]])
    with pytest.raises(TypeError, match=r"sequences\[0\] must be an array"):
        pad_sequences([[[1, 2], [3]]])
    with pytest.raises(TypeError, match="sequences must be a sequence"):
        pad_sequences(5)
    with pytest.raises(TypeError, match="floating data"):
        pad_sequences([[0.5, 1.5]], dtype="int64")
    with pytest.raises(ValueError, match="value=0.5"):
        pad_sequences([[1]], maxlen=2, value=0.5)
    with pytest.raises(TypeError, match="value must be a real number"):
        pad_sequences([[1]], value="x")
    with pytest.raises(TypeError, match="dtype"):
        pad_sequences([[1]], dtype=object)
    with pytest.raises(ValueError, match="must be 2-D"):
        pad_sequences(np.zeros((1, 2, 3, 4)))


def test_ragged_to_padded():
    seqs = [np.ones((3, 2)), np.ones((1, 2))]
    x, lengths = ragged_to_padded(seqs, dtype="float32")
    assert x.dtype == np.float32 and x.shape == (2, 3, 2)
    np.testing.assert_array_equal(lengths, [3, 1])
    np.testing.assert_array_equal(x[1], [[1, 1], [0, 0], [0, 0]])
    x2, lengths2 = pad_sequences(seqs, dtype="float32")
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(lengths, lengths2)
