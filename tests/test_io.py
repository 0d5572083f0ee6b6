import numpy as np
import pytest
import tifffile

from cellnb import io
from cellnb.io import InputError


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_roundtrip(tmp_path, dtype, rng):
    img = (rng.random((40, 50)) * 200).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", img)
    out = io.read_image(tmp_path / "a.tif")
    assert out.dtype == dtype and out.shape == (40, 50)
    np.testing.assert_array_equal(out, img)


def test_channels_first_tiff_is_moved_last(tmp_path, rng):
    img = rng.integers(0, 1000, (2, 40, 50)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", img)
    out = io.read_image(tmp_path / "c.tif")
    assert out.shape == (40, 50, 2)
    np.testing.assert_array_equal(out[..., 1], img[1])


def test_png_grey_rgb_reads_as_2d(tmp_path, rng):
    from skimage import io as skio
    g = rng.integers(0, 255, (30, 30)).astype(np.uint8)
    skio.imsave(tmp_path / "g.png", np.stack([g, g, g], -1), check_contrast=False)
    out = io.read_image(tmp_path / "g.png")
    assert out.shape == (30, 30)
    np.testing.assert_array_equal(out, g)


def test_corrupt_file_names_file(tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"II*\x00garbage-not-a-tiff")
    with pytest.raises(InputError, match="broken.tif.*(corrupt|truncated)"):
        io.read_image(p)


@pytest.mark.parametrize("name,msg", [("missing.tif", "not found"), ("x.jpg", "unsupported")])
def test_missing_or_unsupported(tmp_path, name, msg):
    p = tmp_path / name
    if name.endswith(".jpg"):
        p.write_bytes(b"x")
    with pytest.raises(InputError, match=msg):
        io.read_image(p)


def test_zstack_rejected(tmp_path, rng):
    tifffile.imwrite(tmp_path / "z.tif", rng.random((3, 4, 40, 40)).astype(np.float32),
                     photometric="minisblack")
    with pytest.raises(InputError, match="one plane per file"):
        io.read_image(tmp_path / "z.tif")


@pytest.mark.parametrize("bad,msg", [
    (np.full((20, 20), 3.0), "constant"),
    (np.zeros((20, 20)), "constant"),
    (np.where(np.eye(20) > 0, np.nan, 1.0), "NaN"),
    (np.ones((20,)), "2-D"),
    (np.ones((2, 3, 20, 20)), "2-D"),
    (np.array([["a"] * 20] * 20), "numeric"),
    (np.ones((4, 4)), "too small"),
])
def test_check_image_errors(bad, msg):
    if "constant" not in msg and bad.dtype.kind == "f" and not np.isnan(bad).any() and bad.ndim == 2:
        bad = bad + np.arange(bad.size).reshape(bad.shape)
    with pytest.raises(InputError, match=msg):
        io.check_image(bad)


def test_check_image_bool_rejected():
    with pytest.raises(InputError, match="not a numeric image"):
        io.check_image(np.eye(20, dtype=bool))


def test_normalize_percentiles(rng):
    img = rng.normal(100, 10, (64, 64))
    img[0, 0] = 1e6  # a hot pixel must not squash the range
    out = io.normalize(img)
    assert out.dtype == np.float32
    assert abs(np.percentile(out, 1)) < 1e-5 and abs(np.percentile(out, 99.8) - 1) < 1e-5
    two = io.normalize(np.stack([img, img * 5 + 3], -1))
    np.testing.assert_allclose(two[..., 0], two[..., 1], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="pmin < pmax"):
        io.normalize(img, 50, 10)


def test_write_labels_dtype_and_protect(tmp_path):
    lab = np.zeros((20, 20), np.int64)
    lab[2:5, 2:5] = 7
    p = io.write_labels(tmp_path / "l.tif", lab)
    assert tifffile.imread(p).dtype == np.uint16
    lab[10, 10] = 70000
    assert tifffile.imread(io.write_labels(tmp_path / "big.tif", lab)).dtype == np.uint32
    with pytest.raises(InputError, match="overwrite an input"):
        io.write_labels(p, lab, protect=[p])
    with pytest.raises(InputError, match="boolean"):
        io.write_labels(tmp_path / "m.tif", lab > 0)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "out.csv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_markers_csv_roundtrip_and_errors(tmp_path):
    m = np.array([[1.5, 2.25], [10, 20]])
    p = io.write_markers(tmp_path / "m.csv", m)
    np.testing.assert_allclose(io.read_markers(p), m)
    (tmp_path / "xy.csv").write_text("x,y\n3,4\n")
    np.testing.assert_allclose(io.read_markers(tmp_path / "xy.csv"), [[4, 3]])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no marker columns.*napari"):
        io.read_markers(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("row,col\n")
    with pytest.raises(InputError, match="no rows"):
        io.read_markers(tmp_path / "empty.csv")
    with pytest.raises(InputError, match="outside the image"):
        io.check_markers([[5, 500]], shape=(100, 100))
    with pytest.raises(InputError, match="no markers"):
        io.check_markers(np.zeros((0, 2)))


# point exports people already have, as those programs write them
FIJI = (" ,Area,Mean,Min,Max,X,Y,Ch,Frame\n"
        "1,1,120,120,120,30.5,12,1,1\n"
        "2,1,98,98,98,7,40.25,1,1\n")
NAPARI = "index,axis-0,axis-1\n0,12.0,30.5\n1,40.25,7.0\n"


def test_markers_written_for_napari_have_its_points_layout_and_read_back(tmp_path):
    m = np.array([[12.0, 30.5], [40.25, 7.0]])
    p = io.write_markers(tmp_path / "m.csv", m, layout="napari")
    # napari opens a CSV as points when its header holds axis-0 and axis-1
    assert p.read_text().splitlines()[0] == NAPARI.splitlines()[0]
    np.testing.assert_allclose(io.read_markers(p), m)
    with pytest.raises(InputError, match="unknown layout.*napari"):
        io.write_markers(tmp_path / "x.csv", m, layout="fiji")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("text", [FIJI, NAPARI, "\ufeffid,row,col,extra\n1,12,30.5,a\n2,40.25,7,b\n",
                                  "y,x\n12,30.5\n\n40.25,7\n"],
                         ids=["fiji", "napari", "cellnb+bom+extra", "yx+blank-line"])
def test_markers_from_point_exports(tmp_path, text):
    p = tmp_path / "points.csv"
    p.write_text(text, encoding="utf-8")
    np.testing.assert_allclose(io.read_markers(p, shape=(64, 64)), [[12, 30.5], [40.25, 7]])


@pytest.mark.parametrize("text,msg", [
    ("index,axis-0,axis-1,axis-2\n0,1,2,3\n", "3 or more dimensions"),
    ("row,col\n1,2\nnan,3\n", "NaN"),
    ("row,col\n1,2\n1.2,2.1\n", "repeat a position"),
    ("row,col\n1,2\nten,3\n", "not a number"),
    ("row,col\n1,2\n-5,3\n", "outside the image"),
    ("X,Y\n70,3\n", "outside the image"),
])
def test_bad_marker_files(tmp_path, text, msg):
    p = tmp_path / "m.csv"
    p.write_text(text)
    before = p.read_bytes()
    with pytest.raises(InputError, match=msg):
        io.read_markers(p, shape=(64, 64))
    assert p.read_bytes() == before
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(InputError, match="readable CSV|no marker columns"):
        io.read_markers(tmp_path / "bin.csv")


def test_write_table_markdown(tmp_path):
    p = io.write_table(tmp_path / "t.csv", [{"a": 1, "b": 0.12345}, {"a": 2, "c": "x"}],
                       markdown=True)
    assert p.read_text().splitlines()[0] == "a,b,c"
    md = (tmp_path / "t.md").read_text()
    assert "| 1 | 0.123 |  |" in md


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os
    p = io.write_table(tmp_path / "t.csv", [{"a": 1}])
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask   # not mkstemp's private 0600
