"""Dependency-free line plots written as PNG files (learning curves for ``fastrnn train``).

Lines are rasterised onto a NumPy RGB array with a small built-in 5x7 bitmap font for the
title, the axis labels, the tick values and the legend (letters are drawn in capitals), and the
image is written as an 8-bit RGB PNG with :mod:`zlib` and :mod:`struct`, atomically (a temporary
file in the same directory renamed over the target), so an interrupted write never leaves a
half-written file behind.

Examples
--------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
>>> line_plot(path, {"loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7]}, title="LSTM")
>>> open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""
import math
import numbers
import struct
import zlib

import numpy as np

__all__ = ["PALETTE", "line_plot", "write_png"]

#: Line colours, in the order the series are given (Tableau's ten colours).
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)

_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GRID = (225, 225, 225)
_FRAME = (90, 90, 90)

# 5x7 glyphs, one int per row, bit 4 is the leftmost column (the HD44780 character shapes).
_FONT = {
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11),
    "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F),
    "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11),
    "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11),
    "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D),
    "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E),
    "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A),
    "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04),
    "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    " ": (0, 0, 0, 0, 0, 0, 0),
    ".": (0, 0, 0, 0, 0, 0x0C, 0x0C),
    ",": (0, 0, 0, 0, 0x0C, 0x04, 0x08),
    ":": (0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0),
    "-": (0, 0, 0, 0x1F, 0, 0, 0),
    "+": (0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0),
    "=": (0, 0, 0x1F, 0, 0x1F, 0, 0),
    "_": (0, 0, 0, 0, 0, 0, 0x1F),
    "/": (0, 0x01, 0x02, 0x04, 0x08, 0x10, 0),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02),
    ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    "%": (0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03),
    "'": (0x04, 0x04, 0x08, 0, 0, 0, 0),
    "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04),
}
_GLYPH_W, _GLYPH_H, _ADVANCE = 5, 7, 6


def _glyph(ch):
    rows = _FONT.get(ch.upper(), _FONT["?"])
    return np.array([[(r >> (4 - c)) & 1 for c in range(_GLYPH_W)] for r in rows], bool)


_GLYPHS = {}


def text_width(text, scale=1):
    """Width in pixels of ``text`` drawn by :func:`draw_text`."""
    return max(len(text) * _ADVANCE - 1, 0) * scale


def draw_text(img, x, y, text, color=_BLACK, scale=1):
    """Draw ``text`` with its top-left corner at pixel ``(x, y)``; clipped to the image."""
    h, w = img.shape[:2]
    for i, ch in enumerate(text):
        glyph = _GLYPHS.get(ch)
        if glyph is None:
            glyph = _GLYPHS[ch] = _glyph(ch)
        if scale > 1:
            glyph = np.kron(glyph, np.ones((scale, scale), bool))
        gx = x + i * _ADVANCE * scale
        ys, xs = np.nonzero(glyph)
        ys, xs = ys + y, xs + gx
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        img[ys[keep], xs[keep]] = color


def _draw_text_vertical(img, x, y, text, color=_BLACK):
    """Text rotated a quarter turn counter-clockwise, its bottom-left corner at ``(x, y)``."""
    width = text_width(text)
    patch = np.full((_GLYPH_H, width, 3), 255, np.uint8)
    draw_text(patch, 0, 0, text, color)
    mask = (patch != 255).any(axis=2)
    rot = np.rot90(mask)            # (width, 7): reading upwards
    ys, xs = np.nonzero(rot)
    ys, xs = ys + y - width, xs + x
    h, w = img.shape[:2]
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    img[ys[keep], xs[keep]] = color


def _fill(img, x0, y0, x1, y1, color):
    """Fill the rectangle with corners ``(x0, y0)`` and ``(x1, y1)`` (inclusive)."""
    img[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = color


def _rect(img, x0, y0, x1, y1, color):
    """Outline of a rectangle (inclusive corners)."""
    img[y0, x0:x1 + 1] = color
    img[y1, x0:x1 + 1] = color
    img[y0:y1 + 1, x0] = color
    img[y0:y1 + 1, x1] = color


def _draw_polyline(img, xs, ys, color, clip, thickness=2):
    """Straight segments through the points ``(xs[i], ys[i])`` (float pixel coordinates),
    ``thickness`` pixels wide, clipped to ``clip = (x0, y0, x1, y1)``."""
    pts_x, pts_y = [], []
    for i in range(len(xs) - 1):
        dx, dy = xs[i + 1] - xs[i], ys[i + 1] - ys[i]
        n = int(math.ceil(max(abs(dx), abs(dy)) * 2)) + 1
        t = np.linspace(0.0, 1.0, n)
        pts_x.append(xs[i] + t * dx)
        pts_y.append(ys[i] + t * dy)
    if not pts_x:
        return
    px = np.rint(np.concatenate(pts_x)).astype(np.int64)
    py = np.rint(np.concatenate(pts_y)).astype(np.int64)
    lo = -(thickness // 2)
    for ox in range(lo, lo + thickness):
        for oy in range(lo, lo + thickness):
            qx, qy = px + ox, py + oy
            keep = (qx >= clip[0]) & (qx <= clip[2]) & (qy >= clip[1]) & (qy <= clip[3])
            img[qy[keep], qx[keep]] = color


def _tick_label(value):
    if value == 0:
        return "0"
    text = f"{value:.4g}"
    return text.replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


def _nice_ticks(lo, hi, count=5):
    """About ``count`` round values from ``lo`` to ``hi`` (both included as the ends)."""
    span = hi - lo
    raw = span / max(count - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]
    return [t for t in ticks if lo - 1e-12 * span <= t <= hi + 1e-12 * span]


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


def line_plot(path, series, title="", xlabel="epoch", ylabel="loss", width=640, height=400):
    """Plot lines (for example learning curves) and write them as a PNG image.

    Parameters
    ----------
    path : str or os.PathLike
        The PNG file to write (atomically; its directory must exist).
    series : dict of str to sequence of float
        One line per entry, drawn in the order given, in the colours of :data:`PALETTE`;
        point ``i`` of a line is at x = ``i + 1`` (epochs count from 1). NaN and Inf values
        leave gaps. Lines may have different lengths.
    title, xlabel, ylabel : str
        Texts drawn above the plot and along the axes (in capitals, with a 5x7 pixel font).
    width, height : int
        Image size in pixels (at least 200 x 150).

    Raises
    ------
    TypeError
        If ``series`` is not a dict of names to sequences of numbers.
    ValueError
        If ``series`` is empty or the size is too small.
    OSError
        If the file cannot be written.
    """
    data = _check_series(series)
    for name, value, low in (("width", width, 200), ("height", height, 150)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    img = np.full((height, width, 3), 255, np.uint8)

    # plot area
    left, right = 70, width - 20
    top, bottom = (34 if title else 16), height - 44
    n_max = max((len(v) for v in data.values()), default=0)
    finite = np.concatenate([v[np.isfinite(v)] for v in data.values()] + [np.empty(0)])
    if finite.size:
        y_lo, y_hi = float(finite.min()), float(finite.max())
    else:
        y_lo, y_hi = 0.0, 1.0
    if y_hi - y_lo <= 1e-12 * max(abs(y_hi), abs(y_lo), 1e-300):
        pad = abs(y_hi) * 0.1 if y_hi != 0 else 0.5
        y_lo, y_hi = y_lo - pad, y_hi + pad
    margin = 0.05 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - margin, y_hi + margin
    x_lo, x_hi = (1.0, float(n_max)) if n_max > 1 else (0.0, 2.0)   # one point: centred

    def px(x):
        return left + (np.asarray(x, np.float64) - x_lo) / (x_hi - x_lo) * (right - left)

    def py(y):
        return bottom - (np.asarray(y, np.float64) - y_lo) / (y_hi - y_lo) * (bottom - top)

    # grid and ticks: y at round values, x at whole epochs
    y_ticks = _nice_ticks(y_lo, y_hi, 6)
    for t in y_ticks:
        row = int(round(float(py(t))))
        img[row, left + 1:right] = _GRID
        img[row, left - 4:left] = _FRAME
        label = _tick_label(t)
        draw_text(img, left - 7 - text_width(label), row - 3, label)
    x_ticks = [int(t) for t in _nice_ticks(x_lo, x_hi, 8)
               if float(t).is_integer() and 1 <= t <= max(n_max, 1)]
    if not x_ticks or x_ticks[0] != 1:
        x_ticks = [1] + x_ticks
    if n_max > 1 and x_ticks[-1] != n_max and n_max - x_ticks[-1] > (x_hi - x_lo) / 12:
        x_ticks.append(n_max)
    for t in x_ticks:
        col = int(round(float(px(t))))
        img[top + 1:bottom, col] = _GRID
        img[bottom + 1:bottom + 5, col] = _FRAME
        label = str(t)
        draw_text(img, col - text_width(label) // 2, bottom + 8, label)
    _rect(img, left, top, right, bottom, _FRAME)

    # texts
    if title:
        draw_text(img, (width - text_width(title, 2)) // 2, 8, title, scale=2)
    if xlabel:
        draw_text(img, (left + right - text_width(xlabel)) // 2, height - 16, xlabel)
    if ylabel:
        _draw_text_vertical(img, 8, (top + bottom + text_width(ylabel)) // 2, ylabel)

    # lines, with a dot at each point when there are few
    clip = (left + 1, top + 1, right - 1, bottom - 1)
    for k, (name, values) in enumerate(data.items()):
        color = PALETTE[k % len(PALETTE)]
        xs, ys = px(np.arange(1, len(values) + 1)), py(values)
        ok = np.isfinite(values)
        start = 0
        while start < len(values):      # each run of finite values is one polyline
            if not ok[start]:
                start += 1
                continue
            stop = start
            while stop < len(values) and ok[stop]:
                stop += 1
            _draw_polyline(img, xs[start:stop], ys[start:stop], color, clip)
            if stop - start == 1 or len(values) <= 40:
                for i in range(start, stop):
                    cx, cy = int(round(float(xs[i]))), int(round(float(ys[i])))
                    x0, y0 = max(cx - 2, clip[0]), max(cy - 2, clip[1])
                    x1, y1 = min(cx + 2, clip[2]), min(cy + 2, clip[3])
                    if x0 <= x1 and y0 <= y1:
                        img[y0:y1 + 1, x0:x1 + 1] = color
            start = stop

    # legend box in the top-right corner of the plot area
    names = list(data)
    box_w = 30 + max(text_width(n) for n in names)
    box_h = 8 + 12 * len(names)
    bx1, by0 = right - 8, top + 8
    bx0, by1 = bx1 - box_w, by0 + box_h
    if bx0 > left + 4 and by1 < bottom - 4:
        _fill(img, bx0, by0, bx1, by1, _WHITE)
        _rect(img, bx0, by0, bx1, by1, _FRAME)
        for k, name in enumerate(names):
            color = PALETTE[k % len(PALETTE)]
            ry = by0 + 5 + 12 * k
            _fill(img, bx0 + 6, ry, bx0 + 19, ry + 6, color)
            draw_text(img, bx0 + 25, ry, name)

    write_png(path, img)


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png(img):
    """The bytes of an 8-bit RGB PNG of ``img``, a ``(height, width, 3)`` uint8 array."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
        raise ValueError(f"img must be a non-empty (height, width, 3) uint8 array, got "
                         f"shape {img.shape} dtype {img.dtype}")
    h, w = img.shape[:2]
    raw = np.zeros((h, 1 + 3 * w), np.uint8)     # filter type 0 (None) before each row
    raw[:, 1:] = img.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)   # 8 bits, RGB, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b""))


def write_png(path, img):
    """Write ``img`` (``(height, width, 3)`` uint8) as a PNG file, atomically.

    The bytes go to a temporary file in the target's directory, which is then renamed over
    ``path``; on any failure the temporary file is removed and an existing ``path`` is kept.
    """
    from .io import atomic_write

    data = encode_png(img)
    atomic_write(path, lambda fileobj: fileobj.write(data))
