"""The command's files: reading texts, series and labelled CSV files, shaping them for a model,
and writing the learning curves as CSV.

Every problem with a file is a :class:`~fastrnn.cli.errors.CLIError` that names the file (and
the line, where there is one).
"""
import csv
import io
import math
import os
import tempfile

import numpy as np

from .._atomic import atomic_write
from ..text.sequences import pad_sequences
from .errors import CLIError

# ------------------------------------------------------------------------------ reading

def read_text(path):
    """The text of a UTF-8 file (a BOM is dropped; newlines are kept as they are)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CLIError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def csv_rows(path):
    """``[(line_number, [cells...]), ...]`` of the non-blank rows of a CSV file."""
    text = read_text(path)
    rows = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise CLIError(f"{path}: not a valid CSV file (line {reader.line_num}: {exc})") from None
    if not rows:
        raise CLIError(f"{path}: the file is empty (no rows of data)")
    return rows


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _lowered(row):
    """The cells of ``row`` stripped and lower-cased (to find ``text`` and ``label`` headers)."""
    return [cell.strip().lower() for cell in row]


# ------------------------------------------------------------------------------ series

def read_series(path, column=None, preferred=None):
    """One numeric column of a CSV file: ``(values, column label)``.

    The first row is a header if none of its cells is a number. ``column`` is a header name
    or a 0-based index (negative counts from the end); without it, a file's only column, or
    the ``preferred`` header name, or its only numeric column is used.
    """
    header, rows = _header_and_rows(path)
    names = header if header is not None else [str(i) for i in range(len(rows[0][1]))]
    index = _series_column(path, rows, header, names, column, preferred)
    return _column_values(path, rows, index, names[index]), names[index]


def _header_and_rows(path):
    """``(header or None, data rows)`` of a CSV file of numbers, with or without a header."""
    rows = csv_rows(path)
    if any(_is_number(cell) for cell in rows[0][1]):
        return None, rows
    header = [cell.strip() for cell in rows[0][1]]
    if len(rows) == 1:
        raise CLIError(f"{path}: has a header ({', '.join(header)}) but no values")
    return header, rows[1:]


def _series_column(path, rows, header, names, column, preferred):
    """The index of the series: ``column``, the only column, ``preferred``, the only numeric."""
    ncol = len(names)
    if column is not None:
        return _resolve_column(path, column, header, ncol)
    if ncol == 1:
        return 0
    if header is not None and preferred in header:
        return header.index(preferred)
    numeric = [j for j in range(ncol)
               if all(j < len(row) and _is_number(row[j]) for _, row in rows)]
    if len(numeric) != 1:
        raise CLIError(f"{path}: has {ncol} columns ({', '.join(names)}); choose the series "
                       f"with --column NAME or --column INDEX (0-based)")
    return numeric[0]


def _resolve_column(path, column, header, ncol):
    """The index of ``--column`` (a header name or an index) in a file of ``ncol`` columns."""
    if header is not None and column in header:
        return header.index(column)
    try:
        index = int(column)
    except ValueError:
        known = f"columns: {', '.join(header)}" if header is not None else \
            f"the file has no header; use an index 0..{ncol - 1}"
        raise CLIError(f"{path}: no column {column!r} ({known})") from None
    if not -ncol <= index < ncol:
        raise CLIError(f"{path}: column index {index} is out of range for {ncol} column(s) "
                       f"(0..{ncol - 1})")
    return index % ncol


def _column_values(path, rows, index, label):
    """Column ``index`` of every row, as finite float64 numbers."""
    values = np.empty(len(rows))
    for k, (line, row) in enumerate(rows):
        if index >= len(row):
            raise CLIError(f"{path} line {line}: has {len(row)} column(s), no column {label!r}")
        cell = row[index].strip()
        try:
            values[k] = float(cell)
        except ValueError:
            raise CLIError(f"{path} line {line}: {cell!r} in column {label!r} is not a "
                           f"number") from None
        if not math.isfinite(values[k]):
            raise CLIError(f"{path} line {line}: {cell!r} in column {label!r} is not a finite "
                           f"number")
    return values


# ------------------------------------------------------------------------------ texts

def read_labelled(path):
    """``(texts, labels)`` of a CSV of ``text,label`` rows (header optional).

    With a header naming ``text`` and ``label`` columns those are used; without one the label
    is the last field and the text everything before it (so unquoted commas in a text survive).
    """
    rows = csv_rows(path)
    first = _lowered(rows[0][1])
    if "text" in first and "label" in first:
        texts, labels = _named_fields(path, rows, first)
    else:
        for line, row in rows:
            if len(row) < 2:
                raise CLIError(f"{path} line {line}: expected 'text,label', got one field "
                               f"{row[0][:40]!r}")
        texts, labels = _split_last_field(rows)
    if not texts:
        raise CLIError(f"{path}: has a header but no rows of data")
    for (line, _), label in zip(rows[-len(labels):], labels):
        if not label:
            raise CLIError(f"{path} line {line}: the label is empty")
    return texts, labels


def _named_fields(path, rows, header):
    """``(texts, labels)`` from the ``text`` and ``label`` columns named by ``header``."""
    ti, li = header.index("text"), header.index("label")
    texts, labels = [], []
    for line, row in rows[1:]:
        if max(ti, li) >= len(row):
            raise CLIError(f"{path} line {line}: has {len(row)} field(s), the header names "
                           f"{len(header)}")
        texts.append(row[ti])
        labels.append(row[li].strip())
    return texts, labels


def _split_last_field(rows):
    """``(texts, labels)``: the last field of each row is its label, the fields before it
    (joined again with commas) its text."""
    return [",".join(row[:-1]) for _, row in rows], [row[-1].strip() for _, row in rows]


def read_texts(path):
    """Texts to classify: one per line of a text file; or a CSV's ``text`` column (or its
    first field, or everything before a last label field). Returns ``(texts, labels or None)``."""
    if path.lower().endswith(".csv"):
        return _csv_texts(path)
    lines = read_text(path).splitlines()
    if not any(line.strip() for line in lines):
        raise CLIError(f"{path}: the file is empty (no texts)")
    return lines, None


def _csv_texts(path):
    """``(texts, labels or None)`` of a CSV file of texts to classify."""
    rows = csv_rows(path)
    first = _lowered(rows[0][1])
    if "text" in first:
        ti = first.index("text")
        li = first.index("label") if "label" in first else None
        data = rows[1:]
        if not data:
            raise CLIError(f"{path}: has a header but no rows of data")
        texts = [row[ti] if ti < len(row) else "" for _, row in data]
        labels = None if li is None else [row[li].strip() if li < len(row) else ""
                                          for _, row in data]
        return texts, labels
    if all(len(row) == 1 for _, row in rows):
        return [row[0] for _, row in rows], None
    return _split_last_field(rows)


# ------------------------------------------------------------------------------ shaping

def windows(ids, window, stride):
    """Next-token windows: inputs ``ids[s:s+window]``, targets shifted by one."""
    starts = np.arange(0, len(ids) - window, stride)
    x = np.stack([ids[s:s + window] for s in starts])
    y = np.stack([ids[s + 1:s + window + 1] for s in starts])
    return x, y


def encode_texts(vocab, texts, maxlen):
    """Padded token ids and lengths; an empty text becomes one unknown token."""
    seqs = [vocab.encode(t)[:maxlen] or [vocab.unk_id] for t in texts]
    return pad_sequences(seqs, maxlen=maxlen, padding="post", truncating="post", dtype="int64")


# ------------------------------------------------------------------------------ writing

def check_output(option, path, inputs=()):
    """Fail before training, not after it, if ``path`` cannot be written or is one of the
    ``inputs`` (``(option, path)`` pairs: the data a command reads is never overwritten)."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{option} {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{option} {path}: is a directory")
    for other, source in inputs:
        if source is not None and _same_file(path, source):
            raise CLIError(f"{option} {path}: is the {other} file; writing there would destroy "
                           f"it, so give {option} another name")
    try:    # the save writes a temporary file there and renames it over the target
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot write in {directory} "
                       f"({exc.strerror or exc})") from None


def _same_file(a, b):
    """True when paths ``a`` and ``b`` name one file (links and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:     # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def write_history_csv(path, history):
    """Write a training history as CSV, atomically: ``epoch`` (from 1), then one column per
    logged value (``loss``, ``val_loss``, metrics), one row per epoch."""
    keys = list(history.history)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history.epoch)):
        writer.writerow([i + 1, *(repr(float(history.history[k][i]))
                                  if i < len(history.history[k]) else "" for k in keys)])
    data = out.getvalue().encode("utf-8")
    atomic_write(path, lambda fileobj: fileobj.write(data))
