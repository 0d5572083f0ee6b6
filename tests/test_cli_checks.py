"""Every command checks its arguments, paths and outputs before the first expensive step.

Each case must end with exit status 2 and one ``cellnb: error:`` line naming the
problem, and the expensive step (training, notebooks, the batch) must never start:
it is replaced by a function that fails the test if called.
"""
import numpy as np
import pytest
import tifffile

from cellnb import batch, pipeline, runner, synthetic_nuclei
from cellnb.__main__ import main


@pytest.fixture
def never(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the expensive step started before the arguments were checked")
    monkeypatch.setattr(pipeline, "segment", boom)
    monkeypatch.setattr(runner, "run_notebooks", boom)
    monkeypatch.setattr(batch, "run_batch", boom)
    monkeypatch.setattr(synthetic_nuclei, "train_nucleus_model", boom)


@pytest.fixture
def files(tmp_path, small_field):
    tifffile.imwrite(tmp_path / "cells.tif", small_field.images["fluorescence"])
    tifffile.imwrite(tmp_path / "nuc.tif", small_field.nucleus)
    (tmp_path / "folder").mkdir()
    (tmp_path / "p.yaml").write_text("fields: [field_01]\n")
    return tmp_path


def _fails(capsys, argv, *words):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellnb: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)


def test_segment_refuses_bad_outputs_before_training(files, never, capsys):
    t = files
    base = ["segment", "--image", t / "cells.tif", "--nucleus", t / "nuc.tif"]
    _fails(capsys, base + ["--out", t / "nuc.tif"], "overwrite an input")
    _fails(capsys, base + ["--out", t / "folder"], "is a folder")
    _fails(capsys, base + ["--out", t / "labels.png"], ".tif")
    _fails(capsys, base + ["--out", t / "l.tif", "--table", t / "cells.tif"], "--table", ".csv")
    _fails(capsys, base + ["--out", t / "l.tif", "--save-model", t / "m.h5"], ".keras")
    _fails(capsys, base + ["--out", t / "l.tif", "--table", t / "l.tif"], ".csv")
    (t / "ro").mkdir(mode=0o500)
    if not __import__("os").access(t / "ro", __import__("os").W_OK):   # not as root
        _fails(capsys, base + ["--out", t / "ro" / "sub" / "l.tif"], "cannot be created")
    _fails(capsys, base + ["--out", t / "l.tif", "--steps", "0"], "--steps")
    _fails(capsys, base + ["--out", t / "l.tif", "--seed", "-1"], "--seed")
    _fails(capsys, base + ["--out", t / "l.tif", "--threshold", "1.5"], "--threshold")
    _fails(capsys, base + ["--out", t / "l.tif", "--stable", "1.2"], "--stable")
    _fails(capsys, base + ["--out", t / "l.tif", "--model", t / "missing.keras"], "no such file")
    _fails(capsys, ["segment", "--image", t / "folder", "--nucleus", t / "nuc.tif",
                    "--out", t / "l.tif"], "is a folder")
    assert not (t / "l.tif").exists() and not list(t.glob(".l.*"))   # nothing half-written


def test_train_nuclei_evaluate_markers_check_first(files, never, capsys):
    t = files
    _fails(capsys, ["train-nuclei", "--fields", t / "nope", "--out", t / "m.keras"], "no such")
    _fails(capsys, ["train-nuclei", "--fields", t / "folder", "--out", t / "folder"],
           "is a folder")
    _fails(capsys, ["train-nuclei", "--fields", t / "folder", "--out", t / "m.h5"],
           "must end in .keras")
    (t / "m.json").mkdir()
    _fails(capsys, ["train-nuclei", "--fields", t / "folder", "--out", t / "m.keras"],
           "m.json", "is a folder")
    _fails(capsys, ["train-nuclei", "--fields", t / "folder", "--out", t / "n.keras",
                    "--tile", "100"], "--tile")
    _fails(capsys, ["evaluate", "--pred", t / "cells.tif", "--truth", t / "none.tif"], "--truth")
    _fails(capsys, ["markers", "--nucleus", t / "nuc.tif", "--out", t / "nuc.tif"], ".csv")
    _fails(capsys, ["markers", "--nucleus", t / "nuc.tif", "--out", t / "m.csv",
                    "--sigma", "nan"], "--sigma")
    phase = ["markers", "--phase", t / "cells.tif", "--out", t / "m.csv"]
    _fails(capsys, phase + ["--seed", "-1"], "--seed")
    _fails(capsys, phase + ["--save-detector", t / "d.h5"], "--save-detector", ".keras")
    _fails(capsys, phase + ["--detector", t / "missing.keras"], "--detector", "no such file")
    (t / "d.keras").write_bytes(b"")
    _fails(capsys, phase + ["--detector", t / "d.keras", "--save-detector", t / "e.keras"],
           "give one of them")
    _fails(capsys, ["markers", "--nucleus", t / "nuc.tif", "--out", t / "m.csv",
                    "--detector", t / "d.keras"], "with --phase")
    (t / "m1.csv").write_text("row,col\n10,10\n")
    _fails(capsys, ["segment", "--image", t / "cells.tif", "--markers", t / "m1.csv",
                    "--detector", t / "d.keras", "--out", t / "l.tif"], "--detector places")
    _fails(capsys, ["segment", "--image", t / "cells.tif", "--detector", t / "d.keras",
                    "--out", t / "l.tif"], "--detector", "phase-contrast")


def test_run_notebooks_and_batch_check_first(files, never, capsys):
    t = files
    _fails(capsys, ["run-notebooks", "--out", t / "cells.tif"], "is a file")
    _fails(capsys, ["run-notebooks", "--out", t / "r", "--params", t / "no.yaml"], "no such")
    (t / "bad.yaml").write_text("fields: [unclosed\n")
    _fails(capsys, ["run-notebooks", "--out", t / "r", "--params", t / "bad.yaml"], "bad.yaml")
    _fails(capsys, ["batch", "--fields", t / "folder", "--out", t / "folder"], "input folder")
    _fails(capsys, ["batch", "--fields", t / "folder", "--out", t / "b", "--workers", "0"],
           "--workers")
    _fails(capsys, ["batch", "--fields", t / "folder", "--out", t / "b", "--scheduler",
                    "localhost"], "--scheduler")
    _fails(capsys, ["batch", "--fields", t / "nothere", "--out", t / "b"], "no such")
    assert not (t / "r").exists() and not (t / "b").exists()


def test_check_number_bounds():
    from cellnb.io import InputError
    from cellnb.validate import check_number
    check_number("--x", 3, 1, integer=True)
    for bad in (0, 2.5, float("nan"), True, "3"):
        with pytest.raises(InputError, match="--x"):
            check_number("--x", bad, 1, integer=True)
    with pytest.raises(InputError, match=r"\(0, 1\)"):
        check_number("--t", 1.0, 0, 1, open_low=True, open_high=True)
    assert np.isfinite(0.5)


def test_a_field_too_large_for_memory_is_refused_first(monkeypatch, small_field, capsys,
                                                       tmp_path):
    from cellnb import validate
    from cellnb.io import InputError
    need = pipeline.memory_estimate((3000, 3000), 1)
    assert pipeline.memory_estimate((1000, 1000), 1) < need < \
        pipeline.memory_estimate((3000, 3000), 3)
    monkeypatch.setattr(validate, "memory_available", lambda: need - 1)
    with pytest.raises(InputError, match=r"3000x3000 field needs about .* GiB is available"):
        pipeline.check_memory((3000, 3000))
    pipeline.check_memory((1000, 1000))
    # the command refuses before markers, mask or training
    monkeypatch.setattr(validate, "memory_available", lambda: 10 * 2**20)
    tifffile.imwrite(tmp_path / "c.tif", small_field.images["fluorescence"])
    tifffile.imwrite(tmp_path / "n.tif", small_field.nucleus)
    _fails(capsys, ["segment", "--image", tmp_path / "c.tif", "--nucleus", tmp_path / "n.tif",
                    "--out", tmp_path / "l.tif"], "GiB is available")


def test_segment_trains_with_the_budget_the_figures_were_measured_at(files, monkeypatch):
    """The CLI, the package and the batch share one step budget (300, README's figures)."""
    from cellnb.train import TrainConfig
    seen = {}

    class Seen(Exception):
        pass

    def spy(*a, config=None, **k):
        seen["config"] = config
        raise Seen

    monkeypatch.setattr(pipeline, "segment", spy)
    with pytest.raises(Seen):
        main([str(a) for a in ["segment", "--image", files / "cells.tif", "--nucleus",
                               files / "nuc.tif", "--out", files / "l.tif"]])
    assert seen["config"].max_steps == TrainConfig().max_steps == 300
    assert batch.SEGMENT_DEFAULTS["steps"] == 300
    assert not (files / "l.tif").exists()
