"""Fuzz every input reader through the command line.

Each case is a broken or odd input handed to the command that reads it. It
must end with exit status 2 and one line ``cellnb: error: ...`` (never a
traceback), leave the input byte-for-byte unchanged and write no output.
A few inputs are odd but valid (float16, int64 images; a truncation that
happens to leave a readable file): those must succeed or fail the same clean
way. Training never starts (it is replaced by a sentinel), so the whole file
runs in well under a minute. Property-based cases use hypothesis.
"""
import hashlib
import io
import json
import struct
import zipfile

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings, strategies as st

from cellnb import pipeline, runner
from cellnb.__main__ import main

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
COUNT = {"cases": 0, "clean": 0}


class Trained(Exception):
    """Raised instead of training: the input was accepted."""


@pytest.fixture
def no_training(monkeypatch):
    def sentinel(*a, **k):
        raise Trained
    monkeypatch.setattr(pipeline, "segment", sentinel)
    monkeypatch.setattr(runner, "run_notebooks", sentinel)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _clean(capsys, argv, inputs, outputs, accept=False):
    """Run `argv`; a refusal must be one clean error line, inputs unchanged, no outputs."""
    before = [_digest(p) for p in inputs]
    COUNT["cases"] += 1
    try:
        rc = main([str(a) for a in argv])
    except Trained:
        rc = 0
    err = capsys.readouterr().err
    assert [_digest(p) for p in inputs] == before, "an input changed"
    if rc == 0 and accept:
        COUNT["clean"] += 1
        return rc
    assert rc == 2, (rc, err)
    assert err.startswith("cellnb: error: ") and err.count("\n") == 1, err
    assert not any(p.exists() for p in outputs), "partial output"
    folder = outputs[0].parent if outputs else None
    assert folder is None or not list(folder.glob(".*.tmp")) and not list(folder.glob(".out*"))
    COUNT["clean"] += 1
    return rc


def _png_bytes(arr):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def good(small_field):
    nuc = small_field.nucleus
    buf = io.BytesIO()
    tifffile.imwrite(buf, nuc)
    u8 = (255 * (nuc - nuc.min()) / np.ptp(nuc)).astype(np.uint8)
    return {"tif": buf.getvalue(), "png": _png_bytes(u8), "shape": nuc.shape}


@FUZZ
@given(cut=st.floats(0.0, 0.999), kind=st.sampled_from(["tif", "png"]))
def test_truncated_images(tmp_path_factory, capsys, good, cut, kind):
    t = tmp_path_factory.mktemp("trunc")
    data = good[kind]
    f = t / f"nuc.{kind}"
    f.write_bytes(data[:int(cut * len(data))])
    _clean(capsys, ["markers", "--nucleus", f, "--out", t / "m.csv"], [f], [t / "m.csv"],
           accept=True)


def test_headers_that_claim_huge_sizes(tmp_path, capsys):
    # a valid 1x1 TIFF whose ImageWidth / ImageLength tags are then set to 2**31 - 1
    f = tmp_path / "huge.tif"
    tifffile.imwrite(f, np.ones((16, 16), np.uint16))
    raw = bytearray(f.read_bytes())
    ifd = struct.unpack_from("<I", raw, 4)[0]
    for k in range(struct.unpack_from("<H", raw, ifd)[0]):
        tag_at = ifd + 2 + 12 * k
        tag, typ = struct.unpack_from("<HH", raw, tag_at)
        if tag in (256, 257):
            struct.pack_into("<HHII", raw, tag_at, tag, 4, 1, 2**31 - 1)
    f.write_bytes(bytes(raw))
    _clean(capsys, ["markers", "--nucleus", f, "--out", tmp_path / "m.csv"], [f],
           [tmp_path / "m.csv"])
    # a PNG header claiming 100000 x 100000 (CRC fixed so the header itself is valid)
    import zlib
    png = bytearray(_png_bytes(np.arange(256, dtype=np.uint8).reshape(16, 16)))
    struct.pack_into(">II", png, 16, 100_000, 100_000)
    struct.pack_into(">I", png, 29, zlib.crc32(bytes(png[12:29])))
    p = tmp_path / "huge.png"
    p.write_bytes(bytes(png))
    _clean(capsys, ["markers", "--nucleus", p, "--out", tmp_path / "m.csv"], [p],
           [tmp_path / "m.csv"])


@pytest.mark.parametrize("name,arr,valid", [
    ("bool", np.eye(32, dtype=bool), False),
    ("complex", np.ones((32, 32), np.complex64) * np.arange(32), False),
    ("float16", np.random.default_rng(0).random((32, 32)).astype(np.float16), True),
    ("int64", np.random.default_rng(0).integers(0, 10**6, (32, 32)), True),
    ("1x1", np.ones((1, 1), np.uint8), False),
    ("zstack", np.random.default_rng(0).random((5, 3, 32, 32)).astype(np.float32), False),
    ("nan", np.full((32, 32), np.nan, np.float32), False),
    ("constant", np.full((32, 32), 7, np.uint16), False),
    ("empty", np.zeros((0, 32), np.uint8), False),
])
def test_odd_dtypes_and_shapes(tmp_path, capsys, name, arr, valid):
    f = tmp_path / f"{name}.tif"
    tifffile.imwrite(f, arr)
    rc = _clean(capsys, ["markers", "--nucleus", f, "--out", tmp_path / "m.csv"], [f],
                [tmp_path / "m.csv"], accept=valid)
    assert (rc == 0) == valid


ROWS = st.lists(st.tuples(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                    st.integers(-10**6, 10**6),
                                    st.text("abc-,.e+ \"'\t", max_size=6)),
                          st.one_of(st.floats(allow_nan=True), st.integers(-5, 300),
                                    st.text("xyz0-", max_size=4))),
                min_size=0, max_size=8)


@FUZZ
@given(rows=ROWS, header=st.sampled_from(["row,col", "y,x", "X,Y", "axis-0,axis-1",
                                          "a,b", "", "row"]))
def test_marker_csvs(tmp_path_factory, capsys, no_training, good, rows, header):
    t = tmp_path_factory.mktemp("mk")
    img = t / "cells.tif"
    img.write_bytes(good["tif"])
    f = t / "markers.csv"
    f.write_text("\n".join([header] + [f"{a},{b}" for a, b in rows]) + "\n")
    _clean(capsys, ["segment", "--image", img, "--markers", f, "--out", t / "l.tif"],
           [img, f], [t / "l.tif"], accept=True)


@pytest.mark.parametrize("text", ["row,col\nnan,3\n", "row,col\n-4,5\n", "row,col\n5,5\n5,5\n",
                                  "row,col\nfive,5\n", "row,col\n1e9,2\n", "", "\x00\x01\x02",
                                  "axis-0,axis-1,axis-2\n1,2,3\n"])
def test_marker_csv_cases(tmp_path, capsys, no_training, good, text):
    img = tmp_path / "cells.tif"
    img.write_bytes(good["tif"])
    f = tmp_path / "markers.csv"
    f.write_text(text)
    _clean(capsys, ["segment", "--image", img, "--markers", f, "--out", tmp_path / "l.tif"],
           [img, f], [tmp_path / "l.tif"])


def _keras_zip(config: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", config)
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
    return buf.getvalue()


@pytest.mark.parametrize("name,keras_bytes,meta", [
    ("empty", b"", None),
    ("text", b"not a model", None),
    ("zip-no-weights", _keras_zip('{"class_name": "Functional", "config": {}}'), None),
    ("zip-bad-json", _keras_zip("{"), None),
    ("bad-meta", None, "{not json"),
    ("meta-list", None, "[1, 2]"),
])
def test_corrupt_model_files(tmp_path, capsys, no_training, good, name, keras_bytes, meta,
                             shipped_model):
    img = tmp_path / "cells.tif"
    img.write_bytes(good["tif"])
    model = tmp_path / "m.keras"
    model.write_bytes(keras_bytes if keras_bytes is not None else shipped_model.read_bytes())
    if meta is not None:
        model.with_suffix(".json").write_text(meta)
    _clean(capsys, ["segment", "--image", img, "--nucleus", img, "--model", model,
                    "--out", tmp_path / "l.tif"],
           [img, model, model.with_suffix(".json")], [tmp_path / "l.tif"])


@pytest.fixture(scope="module")
def shipped_model():
    from pathlib import Path
    return Path(__file__).resolve().parents[1] / "data" / "models" / "nuclei__fluorescence.keras"


@pytest.mark.parametrize("yaml_text", [
    "fields: 3\n", "steps: ten\n", "04_train: {steps: [1, 2]}\n", "no_such_key: 1\n",
    "04_train: {nope: 1}\n", "- a\n- b\n", "fields: [unclosed\n", "\x00\xff binary",
    "interactive: 1\n", "fields: [3]\n", "sigma: [1]\n", "06_evaluate: {worst_n: 2.5}\n",
])
def test_parameter_yaml(tmp_path, capsys, no_training, yaml_text):
    p = tmp_path / "p.yaml"
    p.write_bytes(yaml_text.encode("latin-1"))
    _clean(capsys, ["run-notebooks", "--params", p, "--out", tmp_path / "run"], [p],
           [tmp_path / "run"])


def test_fuzz_count(capsys):
    # runs last in this file: every case tried was answered cleanly
    print(f"fuzz: {COUNT['cases']} cases, {COUNT['clean']} answered cleanly")
    assert COUNT["cases"] >= 80 and COUNT["clean"] == COUNT["cases"]
