import nbformat
import numpy as np
import pytest

from cellnb import runner
from cellnb.__main__ import main
from cellnb.io import InputError, read_markers


def _nb(path, params_src, body):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_params_sections_and_typos(tmp_path):
    _nb(tmp_path / "01_a.ipynb", "x = 1\nout_dir = '.'", "pass")
    _nb(tmp_path / "02_b.ipynb", "x = 1\ny = 2", "pass")
    nbs = runner.find_notebooks(tmp_path)
    assert [p.stem for p in nbs] == ["01_a", "02_b"]
    params = {"x": 5, "02_b": {"y": 9}}
    assert runner.params_for(nbs[0], params) == {"x": 5}
    assert runner.params_for(nbs[1], params) == {"x": 5, "y": 9}
    with pytest.raises(InputError, match="not declared"):
        runner.params_for(nbs[0], {"01": {"y": 1}})
    with pytest.raises(InputError, match="unknown parameter"):
        runner.run_notebooks(tmp_path / "out", {"xx": 1}, folder=tmp_path)
    with pytest.raises(InputError, match="no such notebook"):
        runner.find_notebooks(tmp_path, only=["07"])


def test_failed_notebook_stops_run_and_keeps_copy(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _nb(nbdir / "01_ok.ipynb", "out_dir = '.'", "open(out_dir + '/ok.txt', 'w').write('1')")
    _nb(nbdir / "02_bad.ipynb", "out_dir = '.'", "raise ValueError('boom here')")
    _nb(nbdir / "03_never.ipynb", "out_dir = '.'", "open(out_dir + '/never.txt', 'w')")
    out = tmp_path / "run"
    with pytest.raises(runner.NotebookFailed, match=r"02_bad.ipynb failed.*ValueError: boom here"):
        runner.run_notebooks(out, folder=nbdir)
    assert (out / "ok.txt").exists() and (out / "02_bad.ipynb").exists()
    assert not (out / "never.txt").exists()
    # the CLI reports the same with exit status 1
    assert main(["run-notebooks", "--out", str(out), "--notebooks", str(nbdir)]) == 1


def test_trainings_in_the_kernel_report_to_the_terminal(tmp_path):
    # one progress line per model reaches the runner's log, from inside the kernel
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _nb(nbdir / "01_fit.ipynb", "out_dir = '.'",
        "from cellnb.train import StepReport\n"
        "r = StepReport('toy model', total=4, every=0)\n"
        "for k in range(1, 5):\n    r.update(k, -float(k))\n"
        "r.done(4, 'max_steps', -4.0)")
    lines = []
    runner.run_notebooks(tmp_path / "run", folder=nbdir, log=lines.append)
    assert lines[0].startswith("[cellnb] running 01_fit.ipynb")
    assert "[cellnb]   toy model: step 2/4, loss -2" in lines[2]
    assert lines[-2] == "[cellnb]   toy model: max_steps after 4 steps, loss -4, 0 s"
    assert lines[-1].startswith("[cellnb] 01_fit.ipynb done in")
    # outside a runner (no CELLNB_PROGRESS) a training writes nothing anywhere
    from cellnb.train import PROGRESS_ENV, StepReport
    assert PROGRESS_ENV not in __import__("os").environ
    StepReport("x", 2, every=0).update(1, 0.0)


def test_framework_noise_is_dropped_real_warnings_kept():
    noise = ["[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All ...",
             "0.00s - Debugger warning: It seems that frozen modules are being used",
             "I0000 00:00:1.0 1 cpu_feature_guard.cc:210] oneDNN custom operations are on.",
             "To enable the following instructions: AVX512F, in other operations, rebuild"]
    real = ["UserWarning: the mask covers 95% of the field", "ValueError: boom",
            "[cellnb] running 04_train.ipynb"]
    assert all(runner.NOISE.search(s) for s in noise)
    assert not any(runner.NOISE.search(s) for s in real)


@pytest.mark.slow
def test_notebook_01_runs_headless(tmp_path):
    # the phase-contrast section (its marker detector trains ~40 s) is run by test_notebooks
    (tmp_path / "p.yaml").write_text("fields: [field_02]\nphase_field: null\n")
    out = tmp_path / "run"
    assert main(["run-notebooks", "--params", str(tmp_path / "p.yaml"), "--out", str(out),
                 "--only", "01"]) == 0
    nb = nbformat.read(out / "01_markers.ipynb", as_version=4)
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    assert (out / "markers" / "field_02.csv").exists()
    assert not (out / "markers" / "field_01.csv").exists()
    table = (out / "tables" / "01_markers.csv").read_text().splitlines()
    assert table[0].startswith("field,source,markers,nuclei,precision,recall,f1")
    assert float(table[1].split(",")[-1]) >= 0.95
    assert (out / "figures" / "01_markers_field_02.png").stat().st_size > 10_000


def test_cli_markers_and_bad_input(tmp_path, small_field, capsys):
    import tifffile
    tifffile.imwrite(tmp_path / "n.tif", small_field.nucleus)
    assert main(["markers", "--nucleus", str(tmp_path / "n.tif"), "--out",
                 str(tmp_path / "m.csv")]) == 0
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert len(lines) > 10 and lines[0] == "id,row,col"
    # the napari layout holds the same points, for correcting them by hand
    assert main(["markers", "--nucleus", str(tmp_path / "n.tif"), "--out",
                 str(tmp_path / "m_napari.csv"), "--layout", "napari"]) == 0
    assert (tmp_path / "m_napari.csv").read_text().splitlines()[0] == "index,axis-0,axis-1"
    np.testing.assert_allclose(read_markers(tmp_path / "m_napari.csv"),
                               read_markers(tmp_path / "m.csv"))
    (tmp_path / "bad.tif").write_bytes(b"nope")
    assert main(["markers", "--nucleus", str(tmp_path / "bad.tif"), "--out",
                 str(tmp_path / "m2.csv")]) == 2
    assert "bad.tif" in capsys.readouterr().err
