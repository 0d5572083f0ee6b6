"""Batch reruns on Dask: fields x parameter sets, resumable, failures isolated."""
import csv
import json
import os

import numpy as np
import pytest

from cellnb import batch, datasets
from cellnb.__main__ import main
from cellnb.io import InputError
from conftest import phase_cells, write_plate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    root = write_plate(tmp_path_factory.mktemp("plate"), side=160, seed=20)
    bad = root / "well_bad"
    bad.mkdir()
    (bad / "fluorescence.tif").write_bytes(b"not a tiff at all")
    return root


def _index(out):
    with open(out / "index.csv") as fh:
        return {r["run"]: r for r in csv.DictReader(fh)}


def test_batch_runs_resumes_and_isolates_failures(tmp_path, plate):
    (tmp_path / "base.yaml").write_text("steps: 2\nconfigs: [fluorescence]\nthreshold: 0.1\n")
    (tmp_path / "grid.yaml").write_text("seed: [0, 1]\n")
    out = tmp_path / "batch"
    args = ["batch", "--fields", str(plate), "--params", str(tmp_path / "base.yaml"),
            "--grid", str(tmp_path / "grid.yaml"), "--out", str(out), "--workers", "2",
            "--threads", "1", "--quiet"]
    threads = tuple(batch.thread_limits(1))
    env_before = {k: os.environ.get(k) for k in threads}
    assert main(args) == 1                       # one field is broken: exit status says so
    # the workers' thread caps do not leak into the caller's process (a later training there
    # would run on one thread)
    assert {k: os.environ.get(k) for k in threads} == env_before
    idx = _index(out)
    assert len(idx) == 8
    done = {k for k, r in idx.items() if r["status"] == "done"}
    assert done == {f"well_{i}__set{s:02d}" for i in range(3) for s in (1, 2)}
    from cellnb.io import read_labels
    from cellnb.metrics import matched_iou
    for k in done:
        # the index's headline figures are those of the run's own label image
        r = idx[k]
        lab = read_labels(out / "runs" / k / "labels__fluorescence.tif")
        truth = datasets.load_field(plate / r["field"]).cells
        assert lab.shape == (160, 160)
        assert int(r["cells[fluorescence]"]) == len(np.unique(lab[lab > 0]))
        assert float(r["mIOU[fluorescence]"]) == pytest.approx(
            matched_iou(truth, lab)["mean"], abs=1e-4)
    for s in (1, 2):
        r = idx[f"well_bad__set{s:02d}"]
        assert r["status"] == "failed" and "fluorescence.tif" in r["error"]
        assert (out / "failed" / f"well_bad__set{s:02d}" / "error.txt").exists()
    assert not (out / ".partial").exists() and (out / "index.md").exists()
    # each run got its own parameter set
    seeds = {k: json.loads((out / "runs" / k / "params.json").read_text())["seed"] for k in done}
    assert seeds == {k: int(k[-1]) - 1 for k in done}

    # an interrupted run leaves only a partial folder, which never counts as finished
    import shutil
    shutil.rmtree(out / "runs" / "well_1__set01")
    (out / ".partial" / "well_1__set01").mkdir(parents=True)
    (out / ".partial" / "well_1__set01" / "labels__fluorescence.tif").write_bytes(b"half")

    # rerun: finished runs are skipped, the interrupted one is redone, the broken one is
    # tried again and fails again
    stamp = (out / "runs" / "well_0__set01" / "result.json").stat().st_mtime_ns
    assert main(args) == 1
    idx2 = _index(out)
    assert {k for k, r in idx2.items() if r["status"] == "done (earlier)"} == \
        done - {"well_1__set01"}
    assert idx2["well_1__set01"]["status"] == "done"
    assert read_labels(out / "runs" / "well_1__set01" / "labels__fluorescence.tif").shape == \
        (160, 160)
    assert idx2["well_bad__set01"]["status"] == "failed"
    assert (out / "runs" / "well_0__set01" / "result.json").stat().st_mtime_ns == stamp


def test_shared_model_trained_on_k_fields(tmp_path, plate):
    fields = [plate / f"well_{i}" for i in range(3)]
    rows = batch.run_batch(fields, tmp_path / "b", {"steps": 3, "precision": "float32"},
                           workers=1, threads=1, train_on=2, progress=False, log=lambda s: None)
    assert [r["status"] for r in rows] == ["done"] * 3
    assert {r["model"] for r in rows} == {"base.keras"}
    assert (tmp_path / "b" / "models" / "base.keras").exists()
    # a pinned precision reaches the training (for clusters of mixed machine kinds)
    meta = json.loads((tmp_path / "b" / "models" / "base.json").read_text())
    assert meta["config"]["precision"] == "float32"


def test_planning_errors(tmp_path, plate):
    with pytest.raises(InputError, match="not used by --mode segment"):
        batch.plan(batch.discover_fields([plate]), [("s", {"stepz": 3})], tmp_path)
    with pytest.raises(InputError, match="detector .*det.keras not found"):
        batch.plan(batch.discover_fields([plate]), [("s", {"detector": "det.keras"})], tmp_path)
    with pytest.raises(InputError, match="share the name"):
        batch.discover_fields([plate / "well_0", plate / "well_0"])
    with pytest.raises(InputError, match="no such folder"):
        batch.discover_fields([tmp_path / "nope"])
    with pytest.raises(InputError, match="non-empty list"):
        batch.parameter_sets({}, {"steps": 3})
    sets = batch.parameter_sets({"steps": 3, "04_train": {"steps": 5}},
                                {"seed": [0, 1], "04_train.steps": [7, 8]})
    assert len(sets) == 4 and sets[3][1]["04_train"]["steps"] == 8 and sets[3][1]["seed"] == 1
    lst = tmp_path / "fields.txt"
    lst.write_text(f"# two wells\n{plate / 'well_0'}\nplate_rel/well_1\n")
    (tmp_path / "plate_rel").symlink_to(plate)
    assert [p.name for p in batch.discover_fields([lst])] == ["well_0", "well_1"]


def test_notebooks_mode_runs_the_series_per_field(tmp_path, plate):
    rows = batch.run_batch([plate / "well_0", plate / "well_1"], tmp_path / "nb",
                           # no phase-contrast section: its marker detector trains ~80 s per
                           # field on one thread, and this test is about the batch
                           {"interactive": False, "phase_field": None}, mode="notebooks",
                           only=["01"], workers=1,
                           threads=1, progress=False, log=lambda s: None)
    assert [r["status"] for r in rows] == ["done", "done"], rows
    for w in ("well_0", "well_1"):
        run = tmp_path / "nb" / "runs" / f"{w}__base"
        assert (run / "01_markers.ipynb").exists()
        # each run saw exactly its own field
        assert [p.name for p in (run / "markers").iterdir()] == [f"{w}.csv"]



def test_a_run_whose_network_is_not_confident_is_marked_in_the_index(tmp_path, plate,
                                                                       monkeypatch):
    """segment's collapse warning reaches the run's index row (the run itself, in-process)."""
    from cellnb import pipeline
    real = pipeline.segment_field

    def unsure(*args, **kwargs):
        res = real(*args, **kwargs)
        res.warning = "the network is not confident: only 0% of the markers (test)"
        return res
    monkeypatch.setattr(pipeline, "segment_field", unsure)
    task, = batch.plan([plate / "well_0"], [("base", {"steps": 2})], tmp_path)
    row = batch.run_task(task)
    assert row["status"] == "done"
    assert row["warning"] == "fluorescence: the network is not confident: only 0% of the " \
                             "markers (test)"
    batch.write_index(tmp_path, [row])
    assert _index(tmp_path)["well_0__base"]["warning"] == row["warning"]


def test_phase_fields_share_one_marker_detector(tmp_path, monkeypatch):
    """A time-lapse without clicks: one frame's detector places every frame's markers."""
    import tifffile
    from cellnb import synthetic_nuclei as sn
    from cellnb.io import read_labels
    frames = {}
    for k in range(2):
        img, _ = phase_cells(seed=10 + k)
        (tmp_path / "movie" / f"t{k}").mkdir(parents=True)
        tifffile.imwrite(tmp_path / "movie" / f"t{k}" / "phase.tif", img)
        frames[f"t{k}"] = img
    cfg = sn.NucleusConfig(tile=64, batch=4, max_steps=10, target=0.0, patience=100, prior=0.05)
    res = sn.train_marker_detector(frames["t0"], config=cfg)
    sn.save_nucleus_model(res, tmp_path / "det.keras", role="marker detector")
    monkeypatch.chdir(tmp_path)           # a relative path, as a user writes it in the YAML
    rows = batch.run_batch([tmp_path / "movie"], tmp_path / "b",
                           {"steps": 2, "configs": ["phase"], "detector": "det.keras"},
                           workers=1, threads=1, progress=False, log=lambda s: None)
    assert [r["status"] for r in rows] == ["done", "done"], rows
    for name, img in frames.items():
        want = sn.self_trained_markers(img, detector=res.model)
        lab = read_labels(tmp_path / "b" / "runs" / f"{name}__base" / "labels__phase.tif")
        assert len(np.unique(lab[lab > 0])) == len(want)
    # one network shared too (--train-on): its training fields take the detector's markers
    monkeypatch.setattr(sn, "train_nucleus_model", lambda *a, **k: pytest.fail("trained"))
    batch.train_shared([str(tmp_path / "movie" / "t0")], {"steps": 2, "configs": ["phase"],
                       "detector": str(tmp_path / "det.keras")}, str(tmp_path / "m.keras"))
    assert (tmp_path / "m.keras").exists()
