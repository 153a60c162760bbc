"""Safe, atomic model files: NumPy arrays plus JSON metadata in one zip, never pickle.

A *bundle* is a zip archive that :func:`numpy.load` can also open (an ``.npz``): every array is
a ``<key>.npy`` member in NumPy's ``.npy`` format, and a ``metadata.json`` member holds
``{"format": "fastrnn", "format_version": 1, ...}`` plus the caller's metadata. The archive
comment holds ``fastrnn-sha256:<hex>``, the SHA-256 of every byte of the file before the
comment, so that any damaged, truncated or modified file is detected on loading.

:func:`save_bundle` writes a temporary file next to the target, flushes and fsyncs it, and
renames it over the target with :func:`os.replace`, so an interrupted save leaves the previous
file as it was. :func:`load_bundle` never unpickles: object arrays are refused, and every way a
file can be wrong raises a ``ValueError`` that names the file.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
>>> save_bundle(path, {"weight_ih_l0": np.ones((4, 3), np.float32)}, {"hidden_size": 4})
>>> arrays, metadata = load_bundle(path)
>>> arrays["weight_ih_l0"].shape, metadata
((4, 3), {'hidden_size': 4})
"""
import errno
import hashlib
import json
import math
import os
import re
import struct
import tokenize
import zipfile
import zlib

import numpy as np

from ._atomic import atomic_write
from ._validation import check_positive_int, check_real

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_INFLATION", "FORMAT_NAME", "FORMAT_VERSION",
           "load_bundle", "save_bundle"]

#: Value of ``metadata["format"]`` in every fastrnn bundle.
FORMAT_NAME = "fastrnn"
#: Newest bundle format version this version of fastrnn writes and reads.
FORMAT_VERSION = 1

_METADATA_MEMBER = "metadata.json"
_RESERVED_KEYS = ("format", "format_version")
_CHECKSUM_PREFIX = b"fastrnn-sha256:"
_CHECKSUM_LEN = len(_CHECKSUM_PREFIX) + 64
_HEX64_RE = re.compile(rb"[0-9a-f]{64}\Z")
#: Array keys: ASCII letters, digits, ``_``, ``.`` and ``-``, not starting with ``.`` or ``-``.
_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_MAX_KEY_LEN = 200
_MAX_METADATA_BYTES = 256 * 2**20
#: dtype kinds a bundle may hold: bool, integers, floats, complex, bytes and str.
_ARRAY_KINDS = "biufcSU"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same content gives the same bytes
_CHUNK = 1 << 20
#: default limits of :func:`load_bundle` (a user who trusts a larger file raises them)
DEFAULT_MAX_BYTES = 4 * 2**30
DEFAULT_MAX_INFLATION = 100
_INFLATION_EXEMPT = 16 * 2**20

# Everything zipfile, zlib, the .npy header parser or json may raise on a malformed file.
_CORRUPT_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    ValueError,  # includes UnicodeDecodeError and json.JSONDecodeError
    EOFError,
    KeyError,
    IndexError,
    OverflowError,
    NotImplementedError,  # unknown compression method
    RuntimeError,  # "encrypted, password required"; RecursionError on deep JSON
    SyntaxError,  # .npy header literal
    tokenize.TokenError,  # .npy header cut short
)


def _check_path(path):
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(
            f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}"
        ) from None


# --------------------------------------------------------------------------- saving


def _check_arrays(arrays):
    if not hasattr(arrays, "items"):
        raise TypeError(
            f"arrays must be a dict of name -> numpy array, got {type(arrays).__name__}"
        )
    checked = {}
    for key, value in arrays.items():
        if not isinstance(key, str):
            raise TypeError(f"arrays keys must be strings, got {type(key).__name__} {key!r}")
        if len(key) > _MAX_KEY_LEN or not _KEY_RE.match(key):
            raise ValueError(
                f"arrays key {key!r} is not a valid name: use 1 to {_MAX_KEY_LEN} ASCII "
                f"letters, digits, '_', '.' or '-', not starting with '.' or '-' "
                f"(no slashes or spaces)"
            )
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise TypeError(f"arrays[{key!r}] is not a valid array: {exc}") from None
        if arr.dtype.hasobject:
            raise TypeError(
                f"arrays[{key!r}] has dtype {arr.dtype}, which holds Python objects; bundles "
                f"never store pickled data: convert it to a numeric array or put it in metadata"
            )
        if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.names is not None:
            raise TypeError(
                f"arrays[{key!r}] has unsupported dtype {arr.dtype}; use a boolean, integer, "
                f"floating, complex, bytes or str dtype"
            )
        checked[key] = arr
    return checked


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _check_json_keys(obj, where):
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"metadata keys must be strings (JSON objects have string keys), "
                    f"got {type(key).__name__} {key!r} in {where}"
                )
            _check_json_keys(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_json_keys(value, f"{where}[{i}]")


def _encode_metadata(metadata):
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    reserved = [key for key in _RESERVED_KEYS if key in metadata]
    if reserved:
        raise ValueError(
            f"metadata must not contain the reserved keys {reserved}; save_bundle sets them"
        )
    _check_json_keys(metadata, "metadata")
    document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **metadata}
    try:
        text = json.dumps(document, default=_json_default, ensure_ascii=False, indent=1)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"metadata is not JSON serialisable: {exc}") from None
    return text.encode("utf-8")


def _new_info(name, compress):
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def _write_array_member(zf, key, arr, compress):
    """Write ``arr`` as the ``<key>.npy`` member of the open zip ``zf``."""
    with zf.open(_new_info(key + ".npy", compress), "w", force_zip64=True) as member:
        np.lib.format.write_array(member, arr, allow_pickle=False)


def _write_zip(fileobj, arrays, metadata_bytes, compress):
    """Write the whole archive, with a placeholder checksum comment, to ``fileobj``."""
    with zipfile.ZipFile(fileobj, "w", allowZip64=True) as zf:
        zf.comment = _CHECKSUM_PREFIX + b"0" * 64
        zf.writestr(_new_info(_METADATA_MEMBER, compress), metadata_bytes)
        for key, arr in arrays.items():
            _write_array_member(zf, key, arr, compress)


def _sha256_prefix(fileobj, nbytes):
    """SHA-256 of the first ``nbytes`` bytes of ``fileobj``."""
    digest = hashlib.sha256()
    fileobj.seek(0)
    left = nbytes
    while left > 0:
        chunk = fileobj.read(min(_CHUNK, left))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    if left:
        raise EOFError("file shorter than expected")
    return digest.hexdigest().encode("ascii")


def _write_checksum(fileobj):
    """Replace the placeholder archive comment by the SHA-256 of everything before it."""
    fileobj.flush()
    size = fileobj.seek(0, os.SEEK_END)
    body = size - _CHECKSUM_LEN
    fileobj.seek(body)
    if fileobj.read(_CHECKSUM_LEN) != _CHECKSUM_PREFIX + b"0" * 64:  # pragma: no cover
        raise RuntimeError("internal error: the zip comment is not at the end of the file")
    digest = _sha256_prefix(fileobj, body)
    fileobj.seek(body + len(_CHECKSUM_PREFIX))
    fileobj.write(digest)


def save_bundle(path, arrays, metadata=None, *, compress=False):
    """Write arrays and JSON metadata to one file, atomically.

    The file is a zip archive readable by :func:`numpy.load` (an ``.npz``; the name is used
    as given, no suffix is added). It is first written to a hidden temporary file in the same
    directory, flushed and fsynced, then renamed over ``path`` with :func:`os.replace` (and the
    directory fsynced where supported). If anything fails, including ``KeyboardInterrupt``,
    the temporary file is removed and an existing file at ``path`` is left untouched. All
    arguments are validated before anything is written.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its directory must exist.
    arrays : dict of str to array_like
        The arrays, by name. Names use ASCII letters, digits, ``_``, ``.`` and ``-`` (such as
        ``"layers.0.weight_ih_l0"``), at most 200 characters, not starting with ``.`` or
        ``-``. Values are converted with :func:`numpy.asarray` and must be boolean, integer,
        floating, complex, bytes or str data; object arrays are refused.
    metadata : dict, optional
        JSON-serialisable data (nested dicts with string keys, lists, str, numbers, bool,
        None; NumPy scalars and arrays are converted to numbers and lists). The keys
        ``"format"`` and ``"format_version"`` are reserved.
    compress : bool, default False
        Deflate the members (smaller, slower to write and read).

    Raises
    ------
    TypeError
        If ``path`` is not a path, ``arrays`` is not a dict, an array has an object or other
        unsupported dtype (the message names its key), or ``metadata`` is not
        JSON-serialisable.
    ValueError
        If an array key is not a valid name, or ``metadata`` uses a reserved key.
    OSError
        If the file cannot be written.

    See Also
    --------
    load_bundle
    """
    path = _check_path(path)
    if not isinstance(compress, (bool, np.bool_)):
        raise TypeError(f"compress must be a bool, got {type(compress).__name__}")
    arrays = _check_arrays(arrays)
    metadata_bytes = _encode_metadata(metadata)


    def write(fileobj):
        _write_zip(fileobj, arrays, metadata_bytes, bool(compress))
        _write_checksum(fileobj)

    atomic_write(path, write)


# --------------------------------------------------------------------------- loading


class _Corrupt:
    """Turn errors from parsing a malformed file into a ValueError that names the file."""

    def __init__(self, path, what):
        self.path = path
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            return False
        if isinstance(exc, _BundleError):
            return False
        corrupt = issubclass(exc_type, _CORRUPT_ERRORS) or (
            # a seek to a nonsense offset taken from a damaged header
            issubclass(exc_type, OSError) and getattr(exc, "errno", None) == errno.EINVAL
        )
        if not corrupt:
            return False
        raise _BundleError(
            f"{self.path!r} is not a valid fastrnn model file: {self.what} "
            f"({exc_type.__name__}: {exc}); the file is truncated, corrupted or not a "
            f"fastrnn bundle"
        ) from None


class _BundleError(ValueError):
    """A malformed bundle (a ValueError; private so that callers catch ValueError)."""


def _fail(path, reason):
    raise _BundleError(f"{path!r} is not a valid fastrnn model file: {reason}")


def _verify_checksum(path, fileobj, zf):
    """Check the SHA-256 in the archive comment; return False if there is none."""
    comment = zf.comment
    if len(comment) != _CHECKSUM_LEN or not comment.startswith(_CHECKSUM_PREFIX):
        return False
    expected = comment[len(_CHECKSUM_PREFIX):]
    if not _HEX64_RE.match(expected):
        return False
    size = fileobj.seek(0, os.SEEK_END)
    body = size - _CHECKSUM_LEN
    fileobj.seek(body)
    if fileobj.read(_CHECKSUM_LEN) != comment:
        _fail(path, "its end record is damaged or data follows the archive")
    if _sha256_prefix(fileobj, body) != expected:
        _fail(
            path,
            "its SHA-256 checksum does not match its contents; the file was damaged or "
            "modified after it was written",
        )
    return True


def _read_metadata(path, zf):
    names = zf.namelist()
    if _METADATA_MEMBER not in names:
        _fail(
            path,
            f"it has no {_METADATA_MEMBER} member, so it was not written by fastrnn "
            f"(a plain .npz or another program's zip archive?)",
        )
    info = zf.getinfo(_METADATA_MEMBER)
    if info.file_size > _MAX_METADATA_BYTES:
        _fail(path, f"its {_METADATA_MEMBER} is implausibly large ({info.file_size} bytes)")
    with _Corrupt(path, f"cannot read {_METADATA_MEMBER}"):
        raw = zf.read(info)
    with _Corrupt(path, f"{_METADATA_MEMBER} is not valid UTF-8 JSON"):
        metadata = json.loads(raw.decode("utf-8"))
    if not isinstance(metadata, dict):
        _fail(path, f"{_METADATA_MEMBER} holds a {type(metadata).__name__}, not a JSON object")
    if metadata.get("format") != FORMAT_NAME:
        _fail(
            path,
            f"{_METADATA_MEMBER} has format {metadata.get('format')!r}, not {FORMAT_NAME!r}; "
            f"it was written by another program",
        )
    version = metadata.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _fail(path, f"{_METADATA_MEMBER} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise _BundleError(
            f"{path!r} was written by a newer fastrnn (format {version}); this version reads "
            f"up to {FORMAT_VERSION}. Upgrade fastrnn to load it."
        )
    return {key: value for key, value in metadata.items() if key not in _RESERVED_KEYS}


def _read_header(path, zf, info):
    """``(shape, dtype, header_size)`` of one ``.npy`` member, from its header alone.

    An object dtype is refused (it would need unpickling), and the data the header declares
    must be exactly what the member holds.
    """
    fmt = np.lib.format
    with zf.open(info) as member:
        version = fmt.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        header_size = member.tell()
    if dtype.hasobject:
        _fail(
            path,
            f"member {info.filename!r} holds Python objects (dtype {dtype}), which would "
            f"need unpickling; fastrnn never unpickles, so the file is refused",
        )
    if dtype.kind not in _ARRAY_KINDS or dtype.names is not None:
        _fail(path, f"member {info.filename!r} has unsupported dtype {dtype}")
    if any(n < 0 for n in shape):
        raise ValueError(f"header declares a negative dimension in shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    data_size = info.file_size - header_size
    if data_size != nbytes:
        raise ValueError(
            f"header declares shape {shape} of {dtype} ({nbytes} bytes) but the member "
            f"holds {data_size} bytes of data"
        )
    return shape, dtype, header_size


def _read_array_member(info, zf):
    """Read one checked ``.npy`` member with NumPy's reader (never unpickling; a stream
    such as a deflated member is read in chunks of 16 MiB)."""
    with zf.open(info) as member:
        arr = np.lib.format.read_array(member, allow_pickle=False)
        if member.read(1):  # reaching the end also makes zipfile check the CRC-32
            raise ValueError("data continues past the declared shape")
    return arr


def _check_sizes(path, members, max_bytes, max_inflation):
    """Refuse a file whose arrays would take more memory than the limits allow."""
    total = sum(info.file_size for info in members)
    if total > max_bytes:
        _fail(path, f"its arrays hold {total} bytes, more than max_bytes={max_bytes}; pass a "
                    f"larger max_bytes to load it if you trust the file")
    for info in members:
        if info.compress_type == zipfile.ZIP_STORED or info.file_size <= _INFLATION_EXEMPT:
            continue
        if info.file_size > max_inflation * max(info.compress_size, 1):
            _fail(path, f"member {info.filename!r} inflates from {info.compress_size} to "
                        f"{info.file_size} bytes, more than max_inflation={max_inflation} "
                        f"times; pass a larger max_inflation to load it if you trust the file")


def _read_arrays(path, zf, max_bytes, max_inflation):
    """Every array member: names and sizes are checked first, then every header, and only
    then is any array read."""
    members = []
    for info in zf.infolist():
        name = info.filename
        if name == _METADATA_MEMBER:
            continue
        key = name[:-4]
        if not name.endswith(".npy") or len(key) > _MAX_KEY_LEN or not _KEY_RE.match(key):
            _fail(path, f"unexpected member {name!r}")
        members.append(info)
    _check_sizes(path, members, max_bytes, max_inflation)
    for info in members:
        with _Corrupt(path, f"cannot parse array member {info.filename!r}"):
            _read_header(path, zf, info)
    arrays = {}
    for info in members:
        with _Corrupt(path, f"cannot parse array member {info.filename!r}"):
            arrays[info.filename[:-4]] = _read_array_member(info, zf)
    return arrays


def load_bundle(path, *, max_bytes=DEFAULT_MAX_BYTES, max_inflation=DEFAULT_MAX_INFLATION):
    """Read a file written by :func:`save_bundle`, without ever unpickling.

    Nothing is allocated beyond what the file justifies: every member's name, size and
    header are checked before any array is read.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, default 4 GiB
        Largest total size of the arrays (as they are in memory).
    max_inflation : float, default 100
        Largest ratio of a deflated member's size to its compressed size (members of up to
        16 MiB are exempt): a "deflate bomb" of a few megabytes can declare gigabytes of
        zeros.

    Returns
    -------
    arrays : dict of str to ndarray
        The arrays, by name, in the order they were saved; writable, with the saved dtypes
        and shapes.
    metadata : dict
        The metadata as saved (after a JSON round trip: tuples come back as lists), without
        the reserved ``"format"`` and ``"format_version"`` keys.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (other ``OSError`` of opening and reading pass through).
    TypeError
        If ``path`` is not a path.
    ValueError
        If the file is not a zip archive, is truncated or corrupted (its checksum or a CRC does
        not match), its arrays exceed ``max_bytes`` or ``max_inflation``, is not a fastrnn bundle (no ``metadata.json`` or a foreign ``format``, as
        for an ``.npz`` from ``numpy.savez``), was written by a newer fastrnn (the message
        gives both format versions), or has an array member that cannot be parsed or that
        holds Python objects. The message names ``path``.

    See Also
    --------
    save_bundle
    """
    path = _check_path(path)
    max_bytes = check_positive_int("max_bytes", max_bytes)
    max_inflation = check_real("max_inflation", max_inflation, 0.0, math.inf, low_open=True,
                               high_open=True)
    with open(path, "rb") as fileobj:
        with _Corrupt(path, "not a readable zip archive"):
            zf = zipfile.ZipFile(fileobj)
        with zf:
            names = zf.namelist()
            if len(set(names)) != len(names):
                _fail(path, "the archive lists a member name twice")
            # The metadata comes first, so that a foreign file or one from a newer fastrnn
            # (whose integrity check may differ) gets a message that says so.
            metadata = _read_metadata(path, zf)
            with _Corrupt(path, "cannot verify the checksum"):
                checksummed = _verify_checksum(path, fileobj, zf)
            if not checksummed:
                _fail(
                    path,
                    "its fastrnn-sha256 checksum (the archive comment) is missing or "
                    "malformed; the file was damaged or rewritten by another program",
                )
            arrays = _read_arrays(path, zf, max_bytes, max_inflation)
    return arrays, metadata
