"""Plots written as PNG files, drawn by matplotlib: line plots (learning curves for ``fastrnn
train``) and attention heat maps (what an :class:`~fastrnn.EncoderDecoder` with attention
looked at, :func:`attention_heatmap`).

matplotlib is an optional dependency: ``pip install fastrnn[plot]`` installs it. It is imported
only when a plot is drawn (``import fastrnn`` never imports it), and the figures are drawn with
:class:`matplotlib.figure.Figure` on a :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`
directly: :mod:`matplotlib.pyplot` is never imported and the user's backend is left as it is.
Without matplotlib, the plotting functions raise an :class:`ImportError` that says how to
install it.

Files are written atomically (a temporary file in the same directory renamed over the target),
so an interrupted write never leaves a half-written file behind.

Examples
--------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
>>> line_plot(path, {"loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7]}, title="LSTM")
>>> open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""
import numbers

import numpy as np

__all__ = ["PALETTE", "attention_heatmap", "line_plot", "require_matplotlib", "write_png"]

#: Line colours as 8-bit RGB, in the order the series are given (Tableau's ten colours).
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)

_INSTALL_HINT = "pip install fastrnn[plot]"
_DPI = 100
#: Lines with at most this many points get a marker at every point.
_MARKERS_UP_TO = 40


def require_matplotlib():
    """Import the parts of matplotlib the plots use, or explain how to install it.

    Returns
    -------
    Figure : type
        :class:`matplotlib.figure.Figure`.
    FigureCanvasAgg : type
        :class:`matplotlib.backends.backend_agg.FigureCanvasAgg`, the non-interactive
        raster canvas (used directly: the global backend is not changed).

    Raises
    ------
    ImportError
        If matplotlib is not installed or cannot be imported; the message says
        ``pip install fastrnn[plot]``.
    """
    try:
        import matplotlib  # noqa: F401  (first, so that a missing package is reported as such)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"plotting needs matplotlib, which is not installed or cannot be imported ({exc}); "
            f"install it with: {_INSTALL_HINT}"
        ) from exc
    return Figure, FigureCanvasAgg


def _literal(text):
    """``text`` drawn as written: a ``$`` is not the start of matplotlib's math mode."""
    return text.replace("$", r"\$")


def _check_series(series):
    if not isinstance(series, dict):
        raise TypeError(f"series must be a dict of name -> list of numbers, got "
                        f"{type(series).__name__}")
    if not series:
        raise ValueError("series is empty: give at least one line to plot")
    out = {}
    for name, values in series.items():
        if not isinstance(name, str):
            raise TypeError(f"series names must be strings, got {type(name).__name__} {name!r}")
        if isinstance(values, (str, bytes)):
            raise TypeError(f"series[{name!r}] must be a sequence of numbers, got a string")
        try:
            values = list(values)
        except TypeError:
            raise TypeError(f"series[{name!r}] must be a sequence of numbers, got "
                            f"{type(values).__name__}") from None
        for i, v in enumerate(values):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating,
                                                                       np.integer)):
                raise TypeError(f"series[{name!r}][{i}] must be a number, got "
                                f"{type(v).__name__} {v!r}")
        out[name] = np.asarray(values, np.float64)
    return out


def _check_size(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _marked_points(finite):
    """Indices of the points of a line that get a marker: all of a short line, and the
    isolated finite points (no finite neighbour, so no segment shows them) of a long one."""
    n = finite.size
    if n <= _MARKERS_UP_TO:
        return np.flatnonzero(finite).tolist()
    left = np.concatenate([[False], finite[:-1]])
    right = np.concatenate([finite[1:], [False]])
    return np.flatnonzero(finite & ~left & ~right).tolist()


def line_plot(path, series, title="", xlabel="epoch", ylabel="loss", width=640, height=400):
    """Plot lines (for example learning curves) and write them as a PNG image.

    Needs matplotlib (``pip install fastrnn[plot]``), imported on the first call.

    Parameters
    ----------
    path : str or os.PathLike
        The PNG file to write (atomically; its directory must exist).
    series : dict of str to sequence of float
        One line per entry, drawn in the order given, in the colours of :data:`PALETTE`, with
        a legend; point ``i`` of a line is at x = ``i + 1`` (epochs count from 1). NaN and Inf
        values leave gaps. Lines may have different lengths.
    title, xlabel, ylabel : str
        Texts drawn above the plot and along the axes, as written (``$`` included).
    width, height : int
        Image size in pixels (at least 200 x 150).

    Raises
    ------
    TypeError
        If ``series`` is not a dict of names to sequences of numbers.
    ValueError
        If ``series`` is empty or the size is too small.
    ImportError
        If matplotlib is not installed (the message says ``pip install fastrnn[plot]``).
        The arguments are checked first; nothing is written.
    OSError
        If the file cannot be written.
    """
    data = _check_series(series)
    width = _check_size("width", width, 200)
    height = _check_size("height", height, 150)
    Figure, FigureCanvasAgg = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    # Agg truncates the figure's size in pixels: half a pixel more keeps width * height exact
    fig = Figure(figsize=((width + 0.5) / _DPI, (height + 0.5) / _DPI), dpi=_DPI,
                 layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k, (name, values) in enumerate(data.items()):
        finite = np.isfinite(values)
        ax.plot(np.arange(1, values.size + 1), np.where(finite, values, np.nan),
                color=tuple(c / 255 for c in PALETTE[k % len(PALETTE)]), linewidth=1.8,
                marker="o", markersize=3.5, markevery=_marked_points(finite),
                label=_literal(name))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, color="0.9")
    if title:
        ax.set_title(_literal(title))
    if xlabel:
        ax.set_xlabel(_literal(xlabel))
    if ylabel:
        ax.set_ylabel(_literal(ylabel))
    ax.legend(loc="best")

    from ._atomic import atomic_write

    atomic_write(path, lambda fileobj: canvas.print_png(fileobj))


def write_png(path, img):
    """Write ``img``, a ``(height, width, 3)`` uint8 RGB array, as a PNG file, atomically.

    Needs matplotlib (``pip install fastrnn[plot]``). The bytes go to a temporary file in the
    target's directory, which is then renamed over ``path``; on any failure the temporary file
    is removed and an existing ``path`` is kept.

    Parameters
    ----------
    path : str or os.PathLike
    img : array_like
        Pixels, row by row from the top, 8-bit RGB.

    Raises
    ------
    ValueError
        If ``img`` is not a non-empty ``(height, width, 3)`` uint8 array.
    ImportError
        If matplotlib is not installed (the message says ``pip install fastrnn[plot]``).
    OSError
        If the file cannot be written.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
        raise ValueError(f"img must be a non-empty (height, width, 3) uint8 array, got "
                         f"shape {img.shape} dtype {img.dtype}")
    require_matplotlib()
    from matplotlib.image import imsave

    from ._atomic import atomic_write

    atomic_write(path, lambda fileobj: imsave(fileobj, img, format="png"))


def _check_labels(name, labels, size):
    """``labels`` as a list of ``size`` strings (None: no labels)."""
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)):
        labels = list(labels)           # a string labels each step with one character
    try:
        labels = [str(label) for label in labels]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of labels, got "
                        f"{type(labels).__name__}") from None
    if len(labels) != size:
        raise ValueError(f"{name} must have one label per step ({size}), got {len(labels)}")
    return labels


def attention_heatmap(path, weights, source_labels=None, target_labels=None,
                      title="attention", cell_size=16):
    """Draw attention weights as an alignment heat map and write it as a PNG image.

    One row per target step (the token written), one column per source step (the tokens
    attended to); darker is more weight. Needs matplotlib (``pip install fastrnn[plot]``),
    imported on the first call.

    Parameters
    ----------
    path : str or os.PathLike
        The PNG file to write (atomically; its directory must exist).
    weights : array_like, shape (target_steps, source_steps)
        One sequence's weights, e.g. ``weights[i, :n_out, :n_in]`` of
        ``EncoderDecoder.predict(..., return_attention=True)`` (each row sums to 1 or is 0);
        finite values in ``[0, 1]``.
    source_labels, target_labels : sequence of str, or str, optional
        The tokens along the columns and the rows (a string: one character per step).
    title : str
        Drawn above the map, as written.
    cell_size : int
        Pixels per cell (at least 4); the image is at least 200 x 150 pixels.

    Raises
    ------
    TypeError
        If ``weights`` is not real numbers, or a labels argument is not a sequence.
    ValueError
        If ``weights`` is not a non-empty 2-D array of finite values in ``[0, 1]``, or the
        labels do not match its shape.
    ImportError
        If matplotlib is not installed (the message says ``pip install fastrnn[plot]``).
        The arguments are checked first; nothing is written.
    OSError
        If the file cannot be written.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "attention.png")
    >>> attention_heatmap(path, [[0.9, 0.1], [0.2, 0.8]], "ab", "ba")
    >>> open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    from ._validation import as_real_array

    w = as_real_array("weights", weights).astype(np.float64)
    if w.ndim != 2 or 0 in w.shape:
        raise ValueError(f"weights must be a non-empty (target_steps, source_steps) array, "
                         f"got shape {w.shape}")
    if not np.isfinite(w).all() or w.min() < 0 or w.max() > 1:
        raise ValueError("weights must be finite values in [0, 1]")
    rows, cols = w.shape
    source_labels = _check_labels("source_labels", source_labels, cols)
    target_labels = _check_labels("target_labels", target_labels, rows)
    cell_size = _check_size("cell_size", cell_size, 4)
    Figure, FigureCanvasAgg = require_matplotlib()

    width = max(200, cols * cell_size + 140)
    height = max(150, rows * cell_size + 110)
    fig = Figure(figsize=((width + 0.5) / _DPI, (height + 0.5) / _DPI), dpi=_DPI,
                 layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(w, cmap="Greys", vmin=0.0, vmax=1.0, aspect="equal",
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8)
    small = max(4, min(9, cell_size * 0.6))
    for labels, axis, ticks in ((source_labels, ax.xaxis, ax.set_xticks),
                                (target_labels, ax.yaxis, ax.set_yticks)):
        if labels is not None:
            ticks(np.arange(len(labels)), [_literal(label) for label in labels])
            axis.set_tick_params(labelsize=small, length=0)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    if title:
        ax.set_title(_literal(title))

    from ._atomic import atomic_write

    atomic_write(path, lambda fileobj: canvas.print_png(fileobj))
