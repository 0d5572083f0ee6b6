"""Faults survived: a real Dask cluster on localhost, a worker killed mid-batch, the batch
command killed with SIGKILL, and Ctrl-C during training.

The cluster is the real thing: ``dask scheduler`` and two ``dask worker`` processes
listening on 127.0.0.1 only, started and stopped by the fixture.
"""
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_plate

pytestmark = pytest.mark.slow
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_NUM_INTRAOP_THREADS="1",
           TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
           DASK_DISTRIBUTED__WORKER__DAEMON="False")
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout, what):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    return write_plate(tmp_path_factory.mktemp("plate"), side=128, seed=40)


class Cluster:
    """A scheduler and two workers on localhost; workers can be killed and restarted."""

    def __init__(self, log_dir: Path):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log_dir, self.workers = log_dir, []
        self.scheduler = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port",
                                                   str(self.port), "--no-dashboard"])
        _wait(self._listening, 60, "the scheduler")
        for _ in range(2):
            self.add_worker()
        _wait(lambda: self.n_workers() == 2, 90, "two workers")

    def _spawn(self, name, args):
        log = open(self.log_dir / f"{name}-{time.time_ns()}.log", "w")
        return subprocess.Popen([str(BIN / "dask"), *args], env=ENV, stdout=log, stderr=log,
                                start_new_session=True)

    def _listening(self):
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def add_worker(self):
        self.workers.append(self._spawn("worker", [
            "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
            "--no-dashboard", "--no-nanny", "--memory-limit", "0"]))

    def n_workers(self) -> int:
        from distributed import Client
        with Client(self.address, timeout=30) as c:
            return len(c.scheduler_info()["workers"])

    def close(self):
        for p in self.workers + [self.scheduler]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster-logs"))
    yield c
    c.close()


def _index(out):
    with open(out / "index.csv") as fh:
        return {r["run"]: r for r in csv.DictReader(fh)}


def _batch(plate, out, extra, steps=2, seeds="[0]"):
    base, grid = out.parent / f"{out.name}.base.yaml", out.parent / f"{out.name}.grid.yaml"
    base.write_text(f"steps: {steps}\nconfigs: [fluorescence]\n")
    grid.write_text(f"seed: {seeds}\n")
    return [sys.executable, "-m", "cellnb", "batch", "--fields", str(plate), "--params",
            str(base), "--grid", str(grid), "--out", str(out), "--threads", "1", "--quiet",
            *extra]


def _finished(out, index):
    """Every run of the index is done, once, whole; nothing half-written is left."""
    assert all(r["status"].startswith("done") for r in index.values()), index
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(index)                                  # one folder per run
    for r in runs:
        assert (out / "runs" / r / "result.json").exists()
        assert (out / "runs" / r / "labels__fluorescence.tif").exists()
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())
    assert not list((out / "runs").glob(".old.*"))


def test_cluster_batch_equals_a_local_run(tmp_path, plate, cluster):
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert subprocess.run(_batch(plate, local, ["--workers", "2"]), env=ENV,
                          timeout=600).returncode == 0
    assert subprocess.run(_batch(plate, remote, ["--scheduler", cluster.address]), env=ENV,
                          timeout=600).returncode == 0
    a, b = _index(local), _index(remote)
    assert sorted(a) == sorted(b) and len(a) == 3
    _finished(remote, b)
    for k in a:
        for col in ("mIOU", "AP50", "cells"):
            if col in a[k]:
                assert a[k][col] == b[k][col], (k, col, a[k][col], b[k][col])
        from cellnb.io import read_labels
        np.testing.assert_array_equal(read_labels(local / "runs" / k / "labels__fluorescence.tif"),
                                      read_labels(remote / "runs" / k / "labels__fluorescence.tif"))


def test_a_worker_killed_mid_batch_is_survived(tmp_path, plate, cluster):
    out = tmp_path / "b"
    p = subprocess.Popen(_batch(plate, out, ["--scheduler", cluster.address], steps=15),
                         env=ENV)
    partial = out / ".partial"
    _wait(lambda: partial.exists() and any(partial.iterdir()), 300, "a run in progress")
    time.sleep(2)
    victim = cluster.workers[0]
    os.killpg(victim.pid, signal.SIGKILL)              # the worker dies mid-run
    victim.wait()
    assert p.wait(timeout=900) == 0
    index = _index(out)
    assert len(index) == 3
    _finished(out, index)
    cluster.add_worker()                               # back to two for the next test
    _wait(lambda: cluster.n_workers() == 2, 90, "the replacement worker")


def test_batch_killed_with_sigkill_resumes_exactly_the_missing_runs(tmp_path, plate, cluster):
    out = tmp_path / "b"
    cmd = _batch(plate, out, ["--scheduler", cluster.address], steps=10, seeds="[0, 1]")
    p = subprocess.Popen(cmd, env=ENV)
    _wait(lambda: (out / "runs").exists() and len(list((out / "runs").iterdir())) >= 1, 600,
          "a finished run")
    p.send_signal(signal.SIGKILL)
    p.wait()
    time.sleep(5)       # runs already on a worker may still finish; both cases are fine
    before = {r.name for r in (out / "runs").iterdir() if (r / "result.json").exists()}
    assert 1 <= len(before) < 6
    assert subprocess.run(cmd, env=ENV, timeout=900).returncode == 0
    index = _index(out)
    _finished(out, index)
    assert len(index) == 6
    earlier = {k for k, r in index.items() if r["status"] == "done (earlier)"}
    assert before <= earlier                  # nothing finished was redone
    assert all(index[k]["status"] == "done" for k in set(index) - earlier)


def test_ctrl_c_during_training_leaves_a_resumable_model(tmp_path, small_field):
    import tifffile
    tifffile.imwrite(tmp_path / "c.tif", small_field.images["fluorescence"])
    tifffile.imwrite(tmp_path / "n.tif", small_field.nucleus)
    model = tmp_path / "m.keras"
    args = [sys.executable, "-m", "cellnb", "segment", "--image", str(tmp_path / "c.tif"),
            "--nucleus", str(tmp_path / "n.tif"), "--out", str(tmp_path / "l.tif"),
            "--steps", "100000", "--save-model", str(model)]
    # SIGINT's default action back in the child: a job started in the background by a shell
    # ignores SIGINT, and a Python started with it ignored never raises KeyboardInterrupt
    p = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []

    def read():
        for chunk in iter(lambda: p.stderr.read1(4096), b""):
            seen.append(chunk.decode(errors="replace"))
    import re
    import threading
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # the progress bar shows a few finished steps: interrupt in the middle of training
    _wait(lambda: any(int(n) >= 3 for n in re.findall(r"\| *(\d+)/100000", "".join(seen))),
          300, "three training steps")
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130, "".join(seen)
    reader.join(timeout=10)
    err = "".join(seen)
    assert "continue with --resume" in err and "Traceback" not in err
    assert not (tmp_path / "l.tif").exists()
    import json
    meta = json.loads(model.with_suffix(".json").read_text())
    assert meta["stop_reason"] == "interrupted" and meta["steps"] >= 1
    assert not list(tmp_path.glob(".m.*"))            # no temporary left behind
    # the saved model continues training and segments
    args2 = args[:-4] + ["--steps", "3", "--resume", str(model), "--quiet"]
    r = subprocess.run(args2, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert tifffile.imread(tmp_path / "l.tif").max() > 0
