"""The fault suite, commands that make no network: each defect a careless or hostile input found, as a test.

Every case checks the three promises of docs/bad-input.md: nothing the command did not make is
lost, a user's mistake ends with exit code 2 and a message naming the file or flag (no
traceback), and no output holding NaN is left behind with exit code 0.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from boxes import gradient_boxes

from velnet.cli import main
from velnet.errors import VelnetInputError
from velnet.fields.field import load_fields
from velnet.prediction.predict import predict_with
from velnet.shipped import model_path

SHIPPED = model_path()  # velnet's default, the shipped classical estimator


ROOT = Path(__file__).resolve().parents[1]


def run(*argv):
    return main([str(a) for a in argv])


def digest(path):
    """sha256 of a file, or of every file under a folder (names and contents)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + f.read_bytes())
    return h.hexdigest()


def failed(capsys, *words):
    """The command's stderr, after checking it is one error line holding `words` and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err, err
    for word in words:
        assert str(word) in err, err
    return err


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A 24^3 fields file of 2 Mpc/h cells (what the shipped classical estimator takes) and its prediction."""
    root = tmp_path_factory.mktemp("faults")
    path, = gradient_boxes(root, seeds=(0,))
    assert run("predict", path, SHIPPED, "--out", root / "pred.h5") == 0
    return path, root / "pred.h5"


def with_density(source, path, change):
    """A copy of the fields file `source` at `path` whose density is `change(density)`."""
    shutil.copy(source, path)
    with h5py.File(path, "r+") as h5:
        value = change(h5["density"][...])
        del h5["density"]
        h5["density"] = value
    return path


def test_evaluate_never_deletes_a_file_or_folder_it_did_not_make(box, tmp_path, capsys):
    truth, pred = box
    (tmp_path / "notes.txt").write_text("keep me")
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "model.keras").write_bytes(b"weights")
    for out in (tmp_path / "notes.txt", run_folder):
        before = digest(out)
        assert run("evaluate", truth, pred, "--baseline", "none", "--out", out) == 2
        failed(capsys, out)
        assert digest(out) == before
    assert run("evaluate", truth, pred, "--baseline", "none", "--out", tmp_path / "notes.txt", "--overwrite") == 2
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    # asked explicitly: the report joins the folder, whose own files stay, also when the report is redone
    assert run("evaluate", truth, pred, "--baseline", "none", "--out", run_folder, "--overwrite") == 0
    (run_folder / "report.md").write_text("an earlier report")
    assert run("evaluate", truth, pred, "--baseline", "none", "--out", run_folder) == 0
    assert (run_folder / "model.keras").read_bytes() == b"weights"
    assert (run_folder / "report.md").read_text() != "an earlier report"


def test_predict_never_writes_over_its_input_or_a_file_it_did_not_make(box, tmp_path, capsys):
    truth, pred = box
    copy = shutil.copy(truth, tmp_path / "box.h5")
    other = shutil.copy(truth, tmp_path / "other.h5")  # a truth box, not a prediction
    before = {path: digest(path) for path in (copy, other)}
    assert run("predict", copy, SHIPPED, "--out", copy) == 2
    failed(capsys, "is also an input")
    assert run("predict", copy, SHIPPED, "--out", other) == 2
    failed(capsys, other, "--overwrite")
    assert {path: digest(path) for path in (copy, other)} == before
    assert run("predict", copy, SHIPPED, "--out", tmp_path / "pred.h5") == 0
    assert run("predict", copy, SHIPPED, "--out", tmp_path / "pred.h5") == 0  # its own: replaced
    assert run("predict", copy, SHIPPED, "--out", other, "--overwrite") == 0
    assert set(load_fields(other)) == {"velocity", "momentum"}


def test_the_record_beside_a_prediction_never_replaces_a_model(box, tmp_path, capsys):
    truth, _ = box
    model = shutil.copy(SHIPPED, tmp_path / "velocity.json")
    before = digest(model)
    assert run("predict", truth, model, "--out", tmp_path / "velocity.h5") == 2  # its record: velocity.json
    failed(capsys, "is also an input")
    assert digest(model) == before and not (tmp_path / "velocity.h5").exists()


@pytest.mark.parametrize("change, words", [
    (lambda d: np.where(np.arange(d.size).reshape(d.shape) == 7, -2.0, d).astype(np.float32),
     ["1 cell(s) are negative"]),
    (lambda d: d - 1, ["density contrast"]),
    (lambda d: 1e10 * d, ["mean about 1"]),
    (lambda d: np.repeat(d[..., None], 3, axis=-1), ["must be a scalar"]),
])
def test_a_density_that_is_no_density_is_refused_everywhere(box, tmp_path, capsys, change, words):
    bad = with_density(box[0], tmp_path / "bad.h5", change)
    assert run("predict", bad, SHIPPED, "--out", tmp_path / "pred.h5") == 2
    failed(capsys, bad, *words)
    assert run("prep", bad, "--split", "train", "--tile", 8, "--margin", 2, "--out", tmp_path / "data") == 2
    failed(capsys, bad, *words)
    assert run("baseline", bad, "--radii", 0, "--out", tmp_path / "classical.json") == 2
    failed(capsys, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]
    with pytest.raises(VelnetInputError, match="density"):  # the library checks it too
        predict_with(SHIPPED, load_fields(bad)["density"])


@pytest.mark.parametrize("attribute, value, words", [
    ("cosmology", '{"Omega_m": 0.3,', ["'cosmology' is not valid JSON"]),
    ("cosmology", json.dumps({"Omega_m": 2.0, "Omega_b": 0.05, "h": 0.7, "sigma8": 0.8, "n_s": 0.96}),
     ["not a flat LCDM"]),
    ("box_size", "large", ["box size must be a positive number"]),
    ("box_size", -32.0, ["box size must be a positive number"]),
    ("nmesh", 20, ["not (N, N, N) or (N, N, N, 3) on the file's mesh N = nmesh = 20"]),
    ("redshift", np.nan, ["redshift must be a number > -1"]),
])
def test_malformed_metadata_is_named(box, tmp_path, capsys, attribute, value, words):
    bad = shutil.copy(box[0], tmp_path / "bad.h5")
    with h5py.File(bad, "r+") as h5:
        h5.attrs[attribute] = value
    assert run("summary", bad) == 2
    failed(capsys, bad, *words)
    assert run("predict", bad, SHIPPED, "--out", tmp_path / "pred.h5") == 2
    assert not (tmp_path / "pred.h5").exists()


@pytest.mark.parametrize("nmesh, words", [(0, "at least 2"), (-4, "at least 2"), (100000, "GiB")])
def test_paint_refuses_a_mesh_it_cannot_make(tiny_simulation, tmp_path, capsys, nmesh, words):
    _, snapshots = tiny_simulation
    assert run("paint", snapshots[-1], "--nmesh", nmesh, "--out", tmp_path / "f.h5") == 2
    failed(capsys, "--nmesh", words)
    assert list(tmp_path.iterdir()) == []


def test_outputs_that_cannot_be_written_are_named(tiny_simulation, tmp_path, capsys):
    _, snapshots = tiny_simulation
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    assert run("paint", snapshots[-1], "--nmesh", 8, "--out", tmp_path / "a-file" / "f.h5") == 2
    failed(capsys, tmp_path / "a-file" / "f.h5", "cannot be written")
    assert run("paint", snapshots[-1], "--nmesh", 8, "--out", tmp_path / "a-folder") == 2
    failed(capsys, tmp_path / "a-folder", "is a folder")
    assert run("paint", snapshots[-1], "--nmesh", 8, "--out", snapshots[-1]) == 2
    failed(capsys, "is also an input")
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o555)
        assert run("paint", snapshots[-1], "--nmesh", 8, "--out", readonly / "f.h5") == 2
        failed(capsys, readonly / "f.h5", "permission denied")
    assert sorted(p.name for p in tmp_path.iterdir()) in (["a-file", "a-folder"], ["a-file", "a-folder", "readonly"])


def test_models_that_are_not_models_are_named_for_what_they_are(box, tmp_path, capsys):
    truth, _ = box
    model = tmp_path / "velocity.keras"
    shutil.copy(SHIPPED.parents[1] / "wu2021-tiny-paper" / "velocity.keras", model)
    with open(model, "r+b") as f:
        f.truncate(model.stat().st_size // 2)
    broken = tmp_path / "classical.json"
    broken.write_text(SHIPPED.read_text()[:20])
    power = SHIPPED.with_suffix(".power.json")
    cases = [(model, ["not a whole .keras file", "truncated"]),
             (broken, ["not a velnet classical", "not JSON"]),
             (power, ["power-preserving correction", "velocity.json", "--power-preserving"]),
             (truth, ["not a model"])]
    for path, words in cases:
        assert run("predict", truth, path, "--out", tmp_path / "pred.h5") == 2
        err = failed(capsys, path, *words)
        assert "Keras" not in err.replace(".keras", "")
    assert not (tmp_path / "pred.h5").exists()


def test_prep_names_the_flag_and_the_fix(box, tmp_path, capsys):
    truth, _ = box
    assert run("prep", truth, "--split", "bogus", "--tile", 8, "--margin", 2, "--out", tmp_path / "d") == 2
    err = failed(capsys, "--split", "bogus")
    assert str(truth) not in err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    assert run("prep", truth, "--split", "train", "--tile", 8, "--margin", 2, "--out", tmp_path / "d") == 2
    err = failed(capsys, "--overwrite")
    assert "overwrite=True" not in err.replace("(Python: overwrite=True)", "")


def test_check_shards_names_a_source_moved_away(box, tmp_path, capsys):
    source = shutil.copy(box[0], tmp_path / "box.h5")
    assert run("prep", source, "--split", "train", "--tile", 8, "--margin", 2, "--out", tmp_path / "data") == 0
    source.rename(tmp_path / "moved.h5")
    assert run("check-shards", tmp_path / "data") == 2
    failed(capsys, source, "moved or deleted")


def test_verbose_shows_the_traceback_and_only_then(box, tmp_path, capsys):
    assert run("summary", tmp_path / "missing.h5") == 2
    failed(capsys, "not found")
    assert run("-v", "summary", tmp_path / "missing.h5") == 2
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_ends_with_one_line_and_leaves_nothing(tiny_simulation, tmp_path):
    _, snapshots = tiny_simulation
    out, log = tmp_path / "out" / "f.h5", tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "velnet.cli", "paint", str(snapshots[-1]), "--nmesh",
                                 "320", "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                # as from a terminal: pytest-xdist's workers ignore SIGINT, and a child inherits that
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 120
        while "paint 320^3" not in log.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        for _ in range(4):  # Python drops a KeyboardInterrupt raised inside a garbage-collector callback
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 130, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("velnet")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, err[-2000:]
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
