"""The :class:`Vocabulary`: tokens (words or characters) to integer ids and back.

Examples
--------
>>> vocab = Vocabulary.build(["the cat sat", "the dog sat down"])
>>> vocab.encode("the cat ran")
[3, 4, 1]
>>> vocab.decode([3, 4, 1])
'the cat'
"""
import collections
import re

import numpy as np

from .._validation import check_int, check_string_tuple

#: Regular expression of the default word-level tokeniser: a run of word characters (letters,
#: digits, underscore; Unicode-aware), optionally followed by apostrophe-joined parts
#: ("don't", "o'clock"), or any single other non-space character (punctuation, symbols).
WORD_PATTERN = r"\w+(?:'\w+)*|[^\w\s]"
_WORD_RE = re.compile(WORD_PATTERN)

_LEVELS = ("word", "char")
_DICT_VERSION = 1


class Vocabulary:
    """A two-way mapping between tokens (words or characters) and integer ids.

    Ids are assigned in this order: first ``specials`` (by default ``"<pad>"`` with id 0 and
    ``"<unk>"`` with id 1), then ``extra_specials`` (for example ``"<bos>"``, ``"<eos>"``),
    then the ordinary ``tokens``. Most users build a vocabulary from texts with
    :meth:`build` rather than calling the constructor.

    Parameters
    ----------
    tokens : sequence of str
        The ordinary tokens, in id order; no duplicates and none equal to a special token.
    level : {"word", "char"}, default "word"
        Word level splits texts with ``tokenizer`` (by default the regular expression
        :data:`WORD_PATTERN`: words and single punctuation characters) and :meth:`decode` joins
        tokens with single spaces. Character level uses every character, whitespace included,
        as a token and :meth:`decode` joins them with nothing in between.
    lower : bool, default False
        Lower-case texts before tokenising them (in :meth:`build` and :meth:`encode`).
    specials : sequence of str, default ("<pad>", "<unk>")
        Special tokens at the start of the id range. ``specials[0]`` is the padding token
        (:attr:`pad_id`) and ``specials[1]``, if present, is the unknown token (:attr:`unk_id`)
        that :meth:`encode` uses for tokens not in the vocabulary. With fewer than two
        specials the corresponding id is ``None``; encoding an unknown token then raises
        ``KeyError``.
    extra_specials : sequence of str, default ()
        Further special tokens, after ``specials``. They are never produced by tokenising a
        text and :meth:`decode` skips them by default.
    tokenizer : callable, optional
        Word level only: a function ``str -> list[str]`` used instead of the default regular
        expression. It is not saved by :meth:`to_dict`; pass it again to :meth:`from_dict`.

    Attributes
    ----------
    level : str
    lower : bool
    specials : tuple of str
    extra_specials : tuple of str
    tokens : list of str
        All tokens in id order (specials included); ``tokens[i]`` is the token of id ``i``.

    See Also
    --------
    pad_sequences : pack encoded texts into one array with their lengths.
    one_hot : one-hot encode ids.

    Examples
    --------
    >>> vocab = Vocabulary.build(["hello hello world"], level="char")
    >>> vocab.tokens[:6]
    ['<pad>', '<unk>', 'l', 'o', ' ', 'e']
    >>> vocab.decode(vocab.encode("hello"))
    'hello'
    """

    def __init__(
        self,
        tokens,
        *,
        level="word",
        lower=False,
        specials=("<pad>", "<unk>"),
        extra_specials=(),
        tokenizer=None,
    ):
        if level not in _LEVELS:
            raise ValueError(f"level must be 'word' or 'char', got {level!r}")
        if not isinstance(lower, (bool, np.bool_)):
            raise TypeError(f"lower must be a bool, got {type(lower).__name__} {lower!r}")
        _check_tokenizer(tokenizer, level)
        tokens = check_string_tuple("tokens", tokens)
        specials = check_string_tuple("specials", specials)
        extra_specials = check_string_tuple("extra_specials", extra_specials)

        self.level = level
        self.lower = bool(lower)
        self.specials = specials
        self.extra_specials = extra_specials
        self._tokenizer = tokenizer
        self._custom_tokenizer = tokenizer is not None
        self._itos = list(specials + extra_specials + tokens)
        self._stoi = _index(self._itos)
        self._num_special = len(specials) + len(extra_specials)

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(
        cls,
        texts,
        level="word",
        min_freq=1,
        max_size=None,
        lower=False,
        specials=("<pad>", "<unk>"),
        extra_specials=(),
        tokenizer=None,
    ):
        """Build a vocabulary from the tokens of some texts.

        Tokens are ordered by frequency, most frequent first; tokens of equal frequency are
        ordered by code point (``sorted`` order of the strings), so the result does not depend
        on the order of ``texts``.

        Parameters
        ----------
        texts : iterable of str
            The training texts. A single string is refused (wrap it in a list).
        level : {"word", "char"}, default "word"
            See :class:`Vocabulary`.
        min_freq : int, default 1
            Keep only tokens that occur at least this many times.
        max_size : int, optional
            Largest size of the vocabulary, special tokens included; the most frequent tokens
            are kept. Must be at least the number of special tokens.
        lower : bool, default False
            Lower-case texts before tokenising.
        specials, extra_specials : sequence of str
            See :class:`Vocabulary`. Occurrences of these strings in the texts are not counted
            as ordinary tokens.
        tokenizer : callable, optional
            Word level only: ``str -> list[str]``, used instead of :data:`WORD_PATTERN`.

        Returns
        -------
        Vocabulary

        Raises
        ------
        TypeError
            If ``texts`` is a string or holds a non-string, or an argument has the wrong type.
        ValueError
            If ``min_freq`` < 1, ``max_size`` is smaller than the number of special tokens,
            or ``level`` is unknown.
        """
        # The constructor validates level, lower, specials and tokenizer on an empty vocabulary
        # first, so that errors are raised before the (possibly long) pass over the texts.
        empty = cls(
            (), level=level, lower=lower, specials=specials,
            extra_specials=extra_specials, tokenizer=tokenizer,
        )
        min_freq = check_int("min_freq", min_freq, low=1)
        if max_size is not None:
            max_size = check_int("max_size", max_size, low=empty._num_special)
        counts = empty._count_tokens(texts)
        ordered = sorted(
            (token for token, n in counts.items() if n >= min_freq),
            key=lambda token: (-counts[token], token),
        )
        if max_size is not None:
            ordered = ordered[: max_size - empty._num_special]
        return cls(
            ordered, level=level, lower=lower, specials=empty.specials,
            extra_specials=empty.extra_specials, tokenizer=tokenizer,
        )

    def _count_tokens(self, texts):
        """How often each ordinary token occurs in ``texts`` (special tokens are not counted)."""
        if isinstance(texts, str):
            raise TypeError(
                "texts must be an iterable of strings, got a single string; "
                "wrap it in a list: Vocabulary.build([text])"
            )
        try:
            iterator = iter(texts)
        except TypeError:
            raise TypeError(
                f"texts must be an iterable of strings, got {type(texts).__name__}"
            ) from None
        counts = collections.Counter()
        for i, text in enumerate(iterator):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
            counts.update(self.tokenize(text))
        for token in self._itos:
            counts.pop(token, None)
        return counts

    # ------------------------------------------------------------------ lookups

    def __len__(self):
        return len(self._itos)

    def __contains__(self, token):
        return token in self._stoi

    def __iter__(self):
        return iter(self._itos)

    def __eq__(self, other):
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.to_dict() == other.to_dict() and self._tokenizer is other._tokenizer

    __hash__ = None

    def __repr__(self):
        return (
            f"Vocabulary(size={len(self)}, level={self.level!r}, lower={self.lower}, "
            f"specials={self.specials!r}, extra_specials={self.extra_specials!r})"
        )

    @property
    def tokens(self):
        """list of str: all tokens in id order, special tokens first (a copy)."""
        return list(self._itos)

    @property
    def pad_id(self):
        """int or None: id of the padding token ``specials[0]`` (0), or None without specials."""
        return 0 if self.specials else None

    @property
    def unk_id(self):
        """int or None: id of the unknown token ``specials[1]`` (1), or None if absent."""
        return 1 if len(self.specials) >= 2 else None

    @property
    def special_ids(self):
        """frozenset of int: ids of ``specials`` and ``extra_specials``."""
        return frozenset(range(self._num_special))

    def token_to_id(self, token):
        """Return the id of ``token``.

        Parameters
        ----------
        token : str

        Returns
        -------
        int
            The token's id, or :attr:`unk_id` if the token is not in the vocabulary.

        Raises
        ------
        TypeError
            If ``token`` is not a string.
        KeyError
            If the token is unknown and the vocabulary has no unknown token.
        """
        if not isinstance(token, str):
            raise TypeError(f"token must be a string, got {type(token).__name__} {token!r}")
        try:
            return self._stoi[token]
        except KeyError:
            if self.unk_id is None:
                raise KeyError(
                    f"token {token!r} is not in the vocabulary, which has no unknown token"
                ) from None
            return self.unk_id

    def id_to_token(self, index):
        """Return the token of id ``index``.

        Parameters
        ----------
        index : int
            An id in ``0 .. len(self) - 1``.

        Returns
        -------
        str

        Raises
        ------
        TypeError
            If ``index`` is not an integer.
        ValueError
            If ``index`` is out of range.
        """
        check_int("index", index)
        if not 0 <= index < len(self._itos):
            raise ValueError(
                f"index must be in 0..{len(self._itos) - 1} for a vocabulary of size "
                f"{len(self._itos)}, got {index}"
            )
        return self._itos[index]

    # ------------------------------------------------------------------ encoding

    def tokenize(self, text):
        """Split ``text`` into tokens (after lower-casing if :attr:`lower`).

        Parameters
        ----------
        text : str

        Returns
        -------
        list of str
            Characters at char level; at word level the tokenizer's output (by default the
            matches of :data:`WORD_PATTERN`, so whitespace is dropped).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        if self.lower:
            text = text.lower()
        if self.level == "char":
            return list(text)
        if self._tokenizer is not None:
            tokens = self._tokenizer(text)
            if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
                raise TypeError("tokenizer must return a list of strings")
            return list(tokens)
        if self._custom_tokenizer:
            raise ValueError(
                "this vocabulary was built with a custom tokenizer, which is not saved; "
                "pass it again: Vocabulary.from_dict(d, tokenizer=...)"
            )
        return _WORD_RE.findall(text)

    def encode(self, text):
        """Encode a text as a list of ids.

        Parameters
        ----------
        text : str

        Returns
        -------
        list of int
            One id per token; unknown tokens get :attr:`unk_id`.

        Raises
        ------
        TypeError
            If ``text`` is not a string.
        KeyError
            If a token is unknown and the vocabulary has no unknown token.
        """
        stoi = self._stoi
        unk = self.unk_id
        ids = []
        for token in self.tokenize(text):
            index = stoi.get(token, unk)
            if index is None:
                raise KeyError(
                    f"token {token!r} is not in the vocabulary, which has no unknown token"
                )
            ids.append(index)
        return ids

    def decode(self, ids, skip_specials=True):
        """Turn ids back into text.

        Parameters
        ----------
        ids : sequence of int or 1-D integer array
        skip_specials : bool, default True
            Leave out special tokens (padding, unknown and ``extra_specials``).

        Returns
        -------
        str
            Tokens joined with single spaces (word level) or with nothing (char level).
            Word-level decoding is not the inverse of tokenising: whitespace is normalised
            and punctuation comes out space-separated (``"hi , there"``).

        Raises
        ------
        TypeError
            If ``ids`` is not a flat sequence of integers.
        ValueError
            If an id is out of range.
        """
        arr = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
        if arr.size == 0:
            return ""
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError(
                f"ids must be a flat sequence of integers, got {arr.ndim}-D data of "
                f"dtype {arr.dtype}"
            )
        bad = (arr < 0) | (arr >= len(self._itos))
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"ids[{pos}] = {int(arr[pos])} is out of range for a vocabulary of size "
                f"{len(self._itos)}"
            )
        lo = self._num_special if skip_specials else 0
        tokens = [self._itos[i] for i in arr.tolist() if i >= lo]
        return ("" if self.level == "char" else " ").join(tokens)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self):
        """Return a JSON-serialisable description of the vocabulary.

        Returns
        -------
        dict
            Keys ``"version"``, ``"level"``, ``"lower"``, ``"specials"``, ``"extra_specials"``,
            ``"tokens"`` (ordinary tokens in id order) and ``"custom_tokenizer"``.

        See Also
        --------
        from_dict
        """
        return {
            "version": _DICT_VERSION,
            "level": self.level,
            "lower": self.lower,
            "specials": list(self.specials),
            "extra_specials": list(self.extra_specials),
            "tokens": self._itos[self._num_special:],
            "custom_tokenizer": self._custom_tokenizer,
        }

    @classmethod
    def from_dict(cls, d, tokenizer=None):
        """Rebuild a vocabulary from :meth:`to_dict` output.

        Parameters
        ----------
        d : dict
        tokenizer : callable, optional
            The custom tokenizer the vocabulary was built with, if any. Without it such a
            vocabulary can decode but raises ``ValueError`` when asked to encode.

        Returns
        -------
        Vocabulary

        Raises
        ------
        TypeError, ValueError
            If ``d`` is not a valid vocabulary description.
        """
        if not isinstance(d, dict):
            raise TypeError(f"d must be a dict from Vocabulary.to_dict(), got {type(d).__name__}")
        missing = {"level", "lower", "specials", "extra_specials", "tokens"} - d.keys()
        if missing:
            raise ValueError(f"d is not a vocabulary description: missing keys {sorted(missing)}")
        version = d.get("version", _DICT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version > _DICT_VERSION:
            raise ValueError(
                f"d has vocabulary format version {version!r}; this version of fastrnn reads "
                f"up to {_DICT_VERSION}"
            )
        custom = d.get("custom_tokenizer", False)
        vocab = cls(
            d["tokens"], level=d["level"], lower=d["lower"], specials=d["specials"],
            extra_specials=d["extra_specials"], tokenizer=tokenizer,
        )
        vocab._custom_tokenizer = bool(custom) or tokenizer is not None
        return vocab


def _check_tokenizer(tokenizer, level):
    """Refuse a tokenizer that is not callable, or one given for character level."""
    if tokenizer is None:
        return
    if not callable(tokenizer):
        raise TypeError(
            f"tokenizer must be a callable str -> list of str or None, "
            f"got {type(tokenizer).__name__}"
        )
    if level != "word":
        raise ValueError("tokenizer can only be given with level='word'")


def _index(itos):
    """``{token: id}`` of the tokens ``itos`` (in id order); ValueError for a repeated one."""
    stoi = {}
    for i, token in enumerate(itos):
        if token in stoi:
            raise ValueError(
                f"token {token!r} appears twice in the vocabulary "
                f"(ids {stoi[token]} and {i}); tokens, specials and "
                f"extra_specials must all be distinct"
            )
        stoi[token] = i
    return stoi
