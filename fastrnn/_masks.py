"""Where the valid steps of a padded batch are: pre- and post-padding, and lengths from tokens.

The engines work on post-padded batches (each sequence's valid steps first, then padding).
A pre-padded batch (padding first, what Keras' ``pad_sequences`` gives by default) is moved to
post-padding at the API boundary by :func:`to_post_padding` and the sequence outputs are moved
back by :func:`to_pre_padding`: both shift each row along the time axis, so one is the other's
inverse, and a gradient is shifted the same way as the array it belongs to.
"""
import numpy as np

#: the values of the ``padding`` arguments: where the padding of a sequence is
PADDINGS = ("post", "pre")


def _shifted(a, lengths, sign):
    """``a`` with row ``b`` rolled by ``sign * (timesteps - lengths[b])`` along axis 1."""
    timesteps = a.shape[1]
    offset = (timesteps - lengths)[:, None]
    steps = (np.arange(timesteps)[None, :] + sign * offset) % timesteps
    return a[np.arange(a.shape[0])[:, None], steps]


def to_post_padding(a, lengths):
    """A pre-padded batch moved to post-padding.

    Parameters
    ----------
    a : ndarray, shape (batch, timesteps, ...)
        Row ``b`` holds its ``lengths[b]`` valid steps last.
    lengths : ndarray of int, shape (batch,)

    Returns
    -------
    ndarray
        A new C-contiguous array: row ``b`` holds the same valid steps first, then the padding.
    """
    return _shifted(a, lengths, 1)


def to_pre_padding(a, lengths):
    """The inverse of :func:`to_post_padding`: valid steps moved from first to last."""
    return _shifted(a, lengths, -1)


def lengths_from_tokens(tokens, padding, name="X"):
    """Lengths of a batch of token ids in which 0 is padding (``Embedding(mask_zero=True)``).

    fastrnn works with lengths, not with a mask per step: a sequence is its tokens from the
    first to the last non-zero one, and the zeros must all be padding, at the end
    (``padding="post"``) or at the start (``padding="pre"``). A 0 between two non-zero tokens
    (which Keras would skip, carrying the state over it) is refused rather than run as a
    token or silently skipped.

    Parameters
    ----------
    tokens : ndarray of int, shape (batch, timesteps)
    padding : {"post", "pre"}
    name : str
        The argument's name in error messages.

    Returns
    -------
    ndarray of int64, shape (batch,)
        Each sequence's count of non-zero tokens (0 for a row of padding only).

    Raises
    ------
    ValueError
        If a row has a 0 between non-zero tokens, or one at the wrong end; the message names
        the row and the step.
    """
    valid = tokens != 0
    lengths = valid.sum(axis=1)
    timesteps = tokens.shape[1]
    steps = np.arange(timesteps)[None, :]
    if padding == "post":
        expected = steps < lengths[:, None]
    else:
        expected = steps >= (timesteps - lengths)[:, None]
    bad = valid != expected
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        step = int(np.flatnonzero(~valid[row] & expected[row])[0])
        where, end = ("before", "end") if padding == "post" else ("after", "start")
        raise ValueError(
            f"{name}[{row}] has the padding token 0 at step {step}, {where} a non-zero token "
            f"(mask_zero=True, padding={padding!r}): fastrnn runs sequences by their lengths, "
            f"so the zeros of a row must all be padding, at its {end}; give that token another "
            f"id, pass lengths yourself, or pass padding="
            f"{'pre' if padding == 'post' else 'post'!r} if the padding is at the other end")
    return lengths.astype(np.int64)
