import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import measure, segmentation

from cellnb import datasets
from cellnb.io import InputError


def test_same_seed_same_field():
    a = datasets.make_field((96, 96), seed=3, mean_radius=10)
    b = datasets.make_field((96, 96), seed=3, mean_radius=10)
    c = datasets.make_field((96, 96), seed=4, mean_radius=10)
    for k in a.images:
        np.testing.assert_array_equal(a.images[k], b.images[k])
    np.testing.assert_array_equal(a.cells, b.cells)
    assert not np.array_equal(a.cells, c.cells)


def test_bundled_data_matches_generator():
    """data/demo is exactly what the generator writes (field_01 checked)."""
    f = datasets.load_demo("field_01")[0]
    g = datasets.make_field(name="field_01", **datasets.DEMO_FIELDS["field_01"])
    for k in g.images:
        np.testing.assert_array_equal(f.images[k], g.images[k])
    np.testing.assert_array_equal(f.cells, g.cells)
    np.testing.assert_array_equal(f.nuclei, g.nuclei)


def test_ground_truth_is_consistent(demo_fields):
    for f in demo_fields:
        n = f.cells.max()
        assert set(np.unique(f.cells)) == set(range(n + 1))
        assert set(np.unique(f.nuclei)) == set(range(n + 1))
        # nucleus k lies inside cell k
        inside = f.nuclei > 0
        assert np.all(f.cells[inside] == f.nuclei[inside])
        # every cell is one connected piece
        for k, sl in enumerate(ndi.find_objects(f.cells), 1):
            assert ndi.label(f.cells[sl] == k)[1] == 1


def test_demo_is_realistically_hard(demo_fields):
    """Confluence ~70%, varied sizes, touching cells, off-centre nuclei, dim cells."""
    for f in demo_fields:
        fg = (f.cells > 0).mean()
        assert 0.6 < fg < 0.85, fg
        areas = np.bincount(f.cells.ravel())[1:]
        assert areas.std() / areas.mean() > 0.3
        # most cells touch another cell (4-neighbours with two different non-zero labels)
        c = f.cells
        touching = set()
        for a, b in ((c[:-1], c[1:]), (c[:, :-1], c[:, 1:])):
            t = (a > 0) & (b > 0) & (a != b)
            touching |= set(a[t]) | set(b[t])
        assert len(touching) > 0.5 * c.max()
        cprops = measure.regionprops(f.cells)
        nprops = {p.label: p.centroid for p in measure.regionprops(f.nuclei)}
        off = [np.hypot(*(np.subtract(p.centroid, nprops[p.label]))) / p.equivalent_diameter_area
               for p in cprops]
        assert np.median(off) > 0.08
        fl = f.images["fluorescence"].astype(float)
        fl -= np.median(fl[f.cells == 0])  # camera offset + background
        mean_fl = ndi.mean(fl, f.cells, np.arange(1, f.cells.max() + 1))
        assert (mean_fl < 0.6 * np.median(mean_fl)).mean() > 0.03


def test_borders_are_not_nucleus_midlines(demo_fields):
    """A seeded watershed/Voronoi split of the true foreground from true nuclei is not perfect."""
    f = demo_fields[0]
    fg = f.cells > 0
    dist = ndi.distance_transform_edt(f.nuclei == 0)
    vor = segmentation.watershed(dist, f.nuclei, mask=fg)
    ious = []
    for k in range(1, f.cells.max() + 1):
        a, b = f.cells == k, vor == k
        ious.append((a & b).sum() / (a | b).sum())
    assert np.mean(ious) < 0.85


def test_save_and_load_field(tmp_path, small_field):
    d = datasets.save_field(small_field, tmp_path / "f")
    g = datasets.load_field(d)
    assert set(g.images) == {"fluorescence", "brightfield", "nucleus"}
    np.testing.assert_array_equal(g.cells, small_field.cells)
    assert g.stack(["fluorescence", "nucleus"]).shape == (*small_field.shape, 2)
    with pytest.raises(InputError, match="no channel"):
        g.stack(["dapi"])


def test_load_field_errors(tmp_path, small_field):
    import tifffile
    d = tmp_path / "f"
    d.mkdir()
    with pytest.raises(InputError, match="no image found"):
        datasets.load_field(d)
    tifffile.imwrite(d / "nucleus.tif", small_field.nucleus)
    f = datasets.load_field(d)                 # nuclei only: enough for the markers step
    assert f.cell_channels == [] and f.nucleus is not None
    tifffile.imwrite(d / "fluorescence.tif", small_field.images["fluorescence"][:100])
    with pytest.raises(InputError, match="different shapes"):
        datasets.load_field(d)
    with pytest.raises(InputError, match="not a folder"):
        datasets.load_field(tmp_path / "nope")
    with pytest.raises(InputError, match="no field"):
        datasets.load_fields(tmp_path, ["zzz"])


def test_make_field_bad_parameters():
    with pytest.raises(InputError, match="confluence"):
        datasets.make_field((100, 100), confluence=1.5)
    with pytest.raises(InputError, match="shape"):
        datasets.make_field((10, 100))


def test_field_folder_with_markers_and_hint(tmp_path):
    f = datasets.make_field((96, 96), seed=3, mean_radius=10)
    mk = np.array([[10.0, 12.0], [50.0, 60.0]])
    hint = np.zeros((96, 96), np.uint8)
    hint[10, 12], hint[0, 0] = 1, 2
    g = datasets.Field(name="f", images={"phase": f.images["brightfield"]}, markers=mk, hint=hint)
    datasets.save_field(g, tmp_path / "f")
    h = datasets.load_field(tmp_path / "f")
    assert list(h.images) == ["phase"] and h.nucleus is None     # hint.tif is not a channel
    np.testing.assert_allclose(h.markers, mk)
    np.testing.assert_array_equal(h.hint, hint)
    (tmp_path / "f" / "markers.csv").write_text("row,col\n200,3\n")
    with pytest.raises(InputError, match="outside the image"):
        datasets.load_field(tmp_path / "f")
    (tmp_path / "f" / "markers.csv").unlink()
    import tifffile
    tifffile.imwrite(tmp_path / "f" / "hint.tif", (hint * 2).astype(np.uint8))
    with pytest.raises(InputError, match="0 \\(not labelled\\), 1 \\(cell\\) and 2"):
        datasets.load_field(tmp_path / "f")
