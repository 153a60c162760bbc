"""Tests of fastrnn.io: bundle round trips, atomic writes, and refusal of bad files."""
import hashlib
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn._atomic
import fastrnn.io as fio
from fastrnn.io import FORMAT_VERSION, load_bundle, save_bundle

PREFIX = b"fastrnn-sha256:"
SLOW_FIXTURE = [HealthCheck.function_scoped_fixture]  # tmp_path is reused on purpose


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "weight_ih_l0": rng.standard_normal((8, 3)).astype(np.float32),
        "layers.1.bias_hh_l0_reverse": rng.standard_normal(8),
        "ids": np.arange(-3, 9, dtype=np.int64).reshape(3, 4),
        "small-ints": np.array([1, 2, 250], dtype=np.uint8),
        "mask": np.array([[True, False]]),
        "scalar": np.float64(2.5),
        "empty": np.zeros((0, 5), dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "complex": np.array([1 + 2j, -1j], dtype=np.complex64),
        "big_endian": np.arange(3, dtype=">i4"),
        "labels": np.array(["neg", "pos"]),
    }


METADATA = {
    "model": "Sequential",
    "layers": [{"type": "LSTM", "hidden_size": 8, "bidirectional": True}, {"type": "Dense"}],
    "vocab": {"tokens": ["<pad>", "<unk>", "héllo", "日本"], "lower": False},
    "history": {"loss": [1.5, 0.25, float("inf")]},
    "nothing": None,
    "epochs": 3,
}


def assert_same_arrays(expected, got):
    assert list(got) == list(expected)
    for key, value in expected.items():
        value = np.asarray(value)
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def craft(path, members, checksum=True, comment=None):
    """Write a zip of ``members`` (name -> bytes), with a valid fastrnn checksum if asked."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        with zipfile.ZipFile(buf, "w") as zf:
            if checksum:
                zf.comment = PREFIX + b"0" * 64
            elif comment is not None:
                zf.comment = comment
            for name, data in members:
                zf.writestr(name, data)
    data = buf.getvalue()
    if checksum:
        body = data[: -(len(PREFIX) + 64)]
        data = body + PREFIX + hashlib.sha256(body).hexdigest().encode()
    pathlib.Path(path).write_bytes(data)
    return data


def npy_bytes(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def meta_bytes(**fields):
    return json.dumps({"format": "fastrnn", "format_version": 1, **fields}).encode()


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "model.npz"
    save_bundle(path, sample_arrays(), METADATA)
    return path


# --------------------------------------------------------------------------- round trips


def test_round_trip(good):
    arrays, metadata = load_bundle(good)
    assert_same_arrays(sample_arrays(), arrays)
    assert metadata == METADATA
    assert all(arr.flags.writeable for arr in arrays.values())
    assert arrays["fortran"].flags.f_contiguous


def test_round_trip_compressed_and_str_path(tmp_path):
    path = str(tmp_path / "model.bin")
    arrays = {"w": np.zeros((100, 100), np.float32)}
    save_bundle(path, arrays, {"a": 1}, compress=True)
    assert os.path.getsize(path) < 10_000
    got, metadata = load_bundle(path)
    assert_same_arrays(arrays, got)
    assert metadata == {"a": 1}


def test_empty_bundle_and_default_metadata(tmp_path):
    path = tmp_path / "empty.npz"
    save_bundle(path, {})
    assert load_bundle(path) == ({}, {})


def test_numpy_values_in_metadata(tmp_path):
    path = tmp_path / "m.npz"
    save_bundle(path, {}, {"n": np.int64(3), "x": np.float32(0.5), "v": np.arange(3), "t": (1, 2)})
    assert load_bundle(path)[1] == {"n": 3, "x": 0.5, "v": [0, 1, 2], "t": [1, 2]}


def test_file_is_a_plain_npz_with_metadata(good):
    with np.load(good, allow_pickle=False) as npz:
        assert "metadata.json" in npz.files
        np.testing.assert_array_equal(npz["ids"], sample_arrays()["ids"])
    with zipfile.ZipFile(good) as zf:
        document = json.loads(zf.read("metadata.json"))
        assert zf.comment.startswith(PREFIX)
    assert document["format"] == "fastrnn"
    assert document["format_version"] == FORMAT_VERSION
    assert document["vocab"] == METADATA["vocab"]


def test_deterministic_bytes(tmp_path):
    save_bundle(tmp_path / "a", sample_arrays(), METADATA)
    save_bundle(tmp_path / "b", sample_arrays(), METADATA)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_overwrite_replaces_and_leaves_no_temp(good):
    save_bundle(good, {"x": np.ones(2)}, {"v": 2})
    arrays, metadata = load_bundle(good)
    assert list(arrays) == ["x"] and metadata == {"v": 2}
    assert os.listdir(good.parent) == [good.name]


def test_fsync_is_called(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    save_bundle(tmp_path / "m", {"x": np.ones(2)})
    assert len(calls) >= 1


# --------------------------------------------------------------------------- atomicity


def _listing(directory):
    return sorted(os.listdir(directory))


def test_crash_mid_write_keeps_old_file(good, monkeypatch):
    before = good.read_bytes()
    real = fio._write_array_member
    written = []

    def crash_on_third(zf, key, arr, compress):
        if len(written) == 2:
            # write half of the member, then die
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                member.write(npy_bytes(arr)[:20])
            raise OSError("disk on fire")
        written.append(key)
        real(zf, key, arr, compress)

    monkeypatch.setattr(fio, "_write_array_member", crash_on_third)
    with pytest.raises(OSError, match="disk on fire"):
        save_bundle(good, {"a": np.ones(3), "b": np.ones(4), "c": np.ones(1000)}, {})
    assert written == ["a", "b"]
    assert good.read_bytes() == before
    assert _listing(good.parent) == [good.name]
    assert_same_arrays(sample_arrays(), load_bundle(good)[0])


@pytest.mark.parametrize("step", ["_write_checksum", "replace", "fsync"])
def test_failure_at_late_steps_keeps_old_file(good, monkeypatch, step):
    before = good.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(f"{step} failed")

    target = fio if step.startswith("_") else os
    monkeypatch.setattr(target, step, boom)
    with pytest.raises(OSError, match=f"{step} failed"):
        save_bundle(good, {"x": np.ones(3)}, {})
    monkeypatch.undo()
    assert good.read_bytes() == before
    assert _listing(good.parent) == [good.name]


def test_keyboard_interrupt_removes_temp(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fio, "_write_array_member", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_bundle(tmp_path / "new.npz", {"x": np.ones(3)})
    assert _listing(tmp_path) == []


def test_bad_input_writes_nothing(good):
    before = good.read_bytes()
    with pytest.raises(TypeError, match=r"arrays\['bad'\].*object"):
        save_bundle(good, {"ok": np.ones(2), "bad": np.array([{}, 1], dtype=object)})
    assert good.read_bytes() == before
    assert _listing(good.parent) == [good.name]


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        save_bundle(tmp_path / "nope" / "m.npz", {})


# --------------------------------------------------------------------------- save errors


BAD_KEYS = ["", "a/b", "../x", ".hidden", "-x", "a b", "é", "x" * 201, "a\\b"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys(tmp_path, key):
    with pytest.raises(ValueError, match="arrays key"):
        save_bundle(tmp_path / "m", {key: np.ones(1)})
    assert _listing(tmp_path) == []


def test_save_errors(tmp_path):
    path = tmp_path / "m"
    with pytest.raises(TypeError, match="arrays keys must be strings"):
        save_bundle(path, {1: np.ones(1)})
    with pytest.raises(TypeError, match="arrays must be a dict"):
        save_bundle(path, [np.ones(1)])
    with pytest.raises(TypeError, match=r"arrays\['x'\] has unsupported dtype"):
        save_bundle(path, {"x": np.zeros(2, dtype=[("a", "f4")])})
    with pytest.raises(TypeError, match=r"arrays\['x'\] is not a valid array"):
        save_bundle(path, {"x": [[1, 2], [3]]})
    with pytest.raises(TypeError, match=r"arrays\['x'\].*Python objects"):
        save_bundle(path, {"x": [None, 1]})
    with pytest.raises(ValueError, match="reserved"):
        save_bundle(path, {}, {"format": "mine"})
    with pytest.raises(ValueError, match="reserved"):
        save_bundle(path, {}, {"format_version": 7})
    with pytest.raises(TypeError, match=r"metadata keys must be strings.*metadata\['a'\]"):
        save_bundle(path, {}, {"a": {1: "x"}})
    with pytest.raises(TypeError, match="metadata is not JSON serialisable"):
        save_bundle(path, {}, {"f": object()})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        save_bundle(path, {}, [1])
    with pytest.raises(TypeError, match="path must be"):
        save_bundle(3.5, {})
    with pytest.raises(TypeError, match="compress"):
        save_bundle(path, {}, compress="yes")
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------- load errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "absent.npz")


def test_truncated_everywhere(good):
    data = good.read_bytes()
    cut = good.parent / "cut.npz"
    points = set(range(30)) | set(range(30, len(data), len(data) // 40)) | {len(data) - 1}
    for n in sorted(points):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match="cut.npz"):
            load_bundle(cut)


def test_every_flipped_byte_is_detected(tmp_path):
    path = tmp_path / "m.npz"
    save_bundle(path, {"w": np.arange(6, dtype=np.float32)}, {"a": [1, 2]})
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data)
    with open(bad, "r+b") as f:  # flip in place: rewriting whole files is slow on some disks
        for i in range(len(data)):
            f.seek(i)
            f.write(bytes([data[i] ^ 0x01]))
            f.flush()
            with pytest.raises(ValueError, match="bad.npz"):
                load_bundle(bad)
            f.seek(i)
            f.write(data[i:i + 1])
    assert load_bundle(bad)[1] == {"a": [1, 2]}


@settings(max_examples=30, deadline=None, suppress_health_check=SLOW_FIXTURE)
@given(st.data())
def test_random_corruption(tmp_path, data):
    path = tmp_path / "m.npz"
    if not path.exists():
        save_bundle(path, sample_arrays(), METADATA)
    raw = bytearray(path.read_bytes())
    positions = data.draw(st.sets(st.integers(0, len(raw) - 1), min_size=1, max_size=4))
    for pos in positions:  # distinct positions, so that no change undoes another
        raw[pos] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="bad.npz"):
        load_bundle(bad)


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW_FIXTURE)
@given(st.binary(max_size=2000))
def test_garbage_bytes(tmp_path, blob):
    path = tmp_path / "garbage.npz"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match="garbage.npz"):
        load_bundle(path)


def test_garbage_that_looks_like_a_zip(tmp_path):
    path = tmp_path / "g.npz"
    path.write_bytes(b"PK\x03\x04" + os.urandom(300) + b"PK\x05\x06" + b"\x00" * 18)
    with pytest.raises(ValueError, match="g.npz"):
        load_bundle(path)


def test_foreign_npz(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.ones(3))
    with pytest.raises(ValueError, match=r"plain\.npz.*no metadata\.json"):
        load_bundle(path)


def test_foreign_format_name(tmp_path):
    path = tmp_path / "other.npz"
    craft(path, [("metadata.json", json.dumps({"format": "keras"}).encode())])
    with pytest.raises(ValueError, match="format 'keras', not 'fastrnn'"):
        load_bundle(path)


def test_newer_format_version(tmp_path):
    path = tmp_path / "future.npz"
    newer = FORMAT_VERSION + 1
    craft(path, [("metadata.json", meta_bytes(format_version=newer))], checksum=False)
    with pytest.raises(ValueError) as info:
        load_bundle(path)
    message = str(info.value)
    assert "future.npz" in message
    assert f"newer fastrnn (format {newer})" in message
    assert f"reads up to {FORMAT_VERSION}" in message


@pytest.mark.parametrize("version", ["1", True, 0, None, 1.0])
def test_invalid_format_version(tmp_path, version):
    path = tmp_path / "m.npz"
    craft(path, [("metadata.json", meta_bytes(format_version=version))])
    with pytest.raises(ValueError, match="invalid format_version"):
        load_bundle(path)


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (b"[1, 2]", "holds a list, not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid UTF-8 JSON"),
    ],
)
def test_bad_metadata(tmp_path, payload, match):
    path = tmp_path / "m.npz"
    craft(path, [("metadata.json", payload)])
    with pytest.raises(ValueError, match=match):
        load_bundle(path)


class _Sentinel:
    executed = False


def _mark_executed():
    _Sentinel.executed = True
    return "pwned"


class _Evil:
    def __reduce__(self):
        return (_mark_executed, ())


@pytest.mark.parametrize("checksum", [True, False])
def test_pickled_object_array_is_refused_without_unpickling(tmp_path, checksum):
    evil = np.array([_Evil(), 1], dtype=object)
    payload = npy_bytes(evil, allow_pickle=True)
    assert pickle.dumps(_Evil()) and b"_mark_executed" in payload
    path = tmp_path / "evil.npz"
    craft(path, [("metadata.json", meta_bytes()), ("w.npy", payload)], checksum=checksum)
    _Sentinel.executed = False
    with pytest.raises(ValueError, match="evil.npz"):
        load_bundle(path)
    assert not _Sentinel.executed
    if checksum:
        with pytest.raises(ValueError, match=r"'w\.npy' holds Python objects"):
            load_bundle(path)


def test_missing_checksum(good, tmp_path):
    with zipfile.ZipFile(good) as zf:
        members = [(name, zf.read(name)) for name in zf.namelist()]
    path = tmp_path / "rezipped.npz"
    craft(path, members, checksum=False)
    with pytest.raises(ValueError, match="checksum .* missing or malformed"):
        load_bundle(path)
    craft(path, members, checksum=False, comment=PREFIX + b"z" * 64)
    with pytest.raises(ValueError, match="missing or malformed"):
        load_bundle(path)
    craft(path, members)  # the same members with a checksum load fine
    assert_same_arrays(sample_arrays(), load_bundle(path)[0])


def test_trailing_data(good):
    good.write_bytes(good.read_bytes() + b"extra")
    with pytest.raises(ValueError, match="model.npz"):
        load_bundle(good)


def test_unexpected_member(tmp_path):
    path = tmp_path / "m.npz"
    craft(path, [("metadata.json", meta_bytes()), ("notes.txt", b"hi")])
    with pytest.raises(ValueError, match="unexpected member 'notes.txt'"):
        load_bundle(path)
    craft(path, [("metadata.json", meta_bytes()), ("dir/w.npy", npy_bytes(np.ones(2)))])
    with pytest.raises(ValueError, match="unexpected member 'dir/w.npy'"):
        load_bundle(path)


def test_duplicate_member(tmp_path):
    path = tmp_path / "m.npz"
    npy = npy_bytes(np.ones(2))
    craft(path, [("metadata.json", meta_bytes()), ("w.npy", npy), ("w.npy", npy)])
    with pytest.raises(ValueError, match="twice"):
        load_bundle(path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.replace(b"(4,)", b"(10**12,)"),  # header lies: not a literal
        lambda b: b.replace(b"(4,)", b"(5,)   "),  # declares more data than present
        lambda b: b.replace(b"(4,)", b"(3,)   "),  # declares less
        lambda b: b[:8],  # header cut
        lambda b: b"\x93NUMPY\x09\x00" + b[8:],  # unknown .npy version
        lambda b: b"not an npy file at all",
    ],
)
def test_bad_array_member(tmp_path, mutate):
    path = tmp_path / "m.npz"
    member = mutate(npy_bytes(np.ones(4)))
    craft(path, [("metadata.json", meta_bytes()), ("w.npy", member)])
    with pytest.raises(ValueError, match=r"m\.npz.*'w\.npy'"):
        load_bundle(path)


def test_huge_declared_shape_is_refused_before_allocating(tmp_path):
    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12, 10**6)}
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "m.npz"
    craft(path, [("metadata.json", meta_bytes()), ("w.npy", buf.getvalue() + b"\0" * 32)])
    with pytest.raises(ValueError, match="declares shape"):
        load_bundle(path)


def test_newer_version_reported_even_with_other_checksum(tmp_path):
    path = tmp_path / "future.npz"
    craft(path, [("metadata.json", meta_bytes(format_version=FORMAT_VERSION + 5))],
          checksum=False, comment=PREFIX + b"0" * 64)
    with pytest.raises(ValueError, match="newer fastrnn"):
        load_bundle(path)


def test_directory_is_not_a_value_error(tmp_path):
    with pytest.raises(OSError) as info:
        load_bundle(tmp_path)
    assert not isinstance(info.value, ValueError)


@pytest.mark.parametrize("shape", [(10**15,), (2**62, 2**62), (0, 10**18)])
def test_file_bomb_header_is_refused_before_numpy_reads_it(tmp_path, monkeypatch, shape):
    """A header claiming more data than the member holds is a ValueError naming the file,
    raised before numpy.lib.format.read_array (which allocates the declared shape) runs."""
    calls = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: calls.append(a))
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    path = tmp_path / "bomb.npz"
    craft(path, [("metadata.json", meta_bytes()), ("w.npy", buf.getvalue() + b"\0" * 64)])
    with pytest.raises(ValueError, match=r"bomb\.npz.*'w\.npy'.*declares shape") as info:
        load_bundle(path)
    assert not isinstance(info.value, MemoryError)
    assert calls == []


def test_negative_dimensions_are_refused(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (-1, -4)})
    path = tmp_path / "m.npz"
    craft(path, [("metadata.json", meta_bytes()), ("w.npy", buf.getvalue() + b"\0" * 32)])
    with pytest.raises(ValueError, match=r"m\.npz.*'w\.npy'.*negative"):
        load_bundle(path)


def test_structured_object_member_is_refused(tmp_path):
    arr = np.zeros(2, dtype=[("a", "<f8"), ("b", object)])
    path = tmp_path / "m.npz"
    craft(path, [("metadata.json", meta_bytes()), ("w.npy", npy_bytes(arr, allow_pickle=True))])
    with pytest.raises(ValueError, match=r"m\.npz.*'w\.npy' holds Python objects"):
        load_bundle(path)


def test_members_are_read_by_numpy_without_pickle(good, monkeypatch):
    """The data is read by numpy's own reader, always with allow_pickle=False."""
    seen = []
    real = np.lib.format.read_array

    def spy(fileobj, *args, **kwargs):
        seen.append(kwargs.get("allow_pickle", args[0] if args else True))
        return real(fileobj, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "read_array", spy)
    arrays, _ = load_bundle(good)
    assert seen == [False] * len(sample_arrays())
    assert_same_arrays(sample_arrays(), arrays)
    assert all(a.flags.writeable for a in arrays.values())


_SLOW_SAVE = """
import sys, time
import numpy as np
import fastrnn.io as fio
real = fio._write_array_member
def slow(*args):
    real(*args)
    print("writing", flush=True)
    time.sleep(60)
fio._write_array_member = slow
fio.save_bundle(sys.argv[1], {"x": np.ones(1000)})
"""


def _start_slow_save(path):
    """A process saving to ``path`` that stops midway (until killed), its temp file written."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and flock are POSIX")
def test_temp_files_of_killed_saves_are_removed_by_the_next_save(good, monkeypatch):
    """Each killed save left its temporary file behind (1.27 GB after 50 kills)."""
    for _ in range(3):
        proc = _start_slow_save(good)
        proc.kill()
        proc.wait()
    temps = [n for n in _listing(good.parent) if n != good.name]
    assert len(temps) == 3 and all(n.startswith(f".{good.name}.") for n in temps)
    running = _start_slow_save(good)        # a save in progress keeps its file
    try:
        monkeypatch.setattr(fastrnn._atomic, "_ABANDONED_AFTER", 0.0)
        other = good.parent / "other.npz"
        save_bundle(other, {"y": np.ones(2)})   # saves to another path leave them alone
        assert len(_listing(good.parent)) == 6
        save_bundle(good, {"x": np.ones(3)})
        left = [n for n in _listing(good.parent) if n not in (good.name, other.name)]
        assert len(left) == 1                    # the running save's file, still locked
    finally:
        running.kill()
        running.wait()
    np.testing.assert_array_equal(load_bundle(good)[0]["x"], np.ones(3))
