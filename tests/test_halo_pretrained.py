"""The shipped halo models on a user's catalogue: another code's HDF5 columns -> halo fields -> velnet predict.

A fastpm box made with the halo experiment's route, its FOF halos written as another code would
(its own dataset names, kpc/h positions, 1e10 Msun/h masses, the metadata as attributes), read
back through a column map (`velnet halo-fields --catalog-config`), then reconstructed with every
shipped halo model and reference: what a user with a catalogue and no training does.
"""
import json

import h5py
import numpy as np
import pytest

from experiments.halo2024 import CONFIG, PRETRAINED
from velnet.cli import main as velnet
from velnet.fields.field import load_fields
from velnet.statistics.pixels import agreement

pytestmark = pytest.mark.slow
SHIPPED = {w: PRETRAINED / f"halo2024-{w}" for w in CONFIG["weightings"]}


@pytest.fixture(scope="module")
def user_catalogue(tmp_path_factory):
    """A 64 Mpc/h box's snapshot and its halos as another code's HDF5 file, with the column map."""
    pytest.importorskip("fastpm")
    root = tmp_path_factory.mktemp("user")
    sim = root / "sim"
    assert velnet(["simulate", "--preset", "halo2024", "--box", "64", "--particles", "64", "--force-mesh",
                   str(CONFIG["force_mesh"]), "--steps", str(CONFIG["steps"]), "--z", str(CONFIG["redshift"]),
                   "--seed", "11", "--out", str(sim)]) == 0
    snapshot = sim / "snapshot_z0.590"
    assert velnet(["halos", str(snapshot), "--linking-length", str(CONFIG["linking_length"]), "--nmin",
                   str(CONFIG["nmin"]), "--out", str(root / "fof.h5")]) == 0
    from data_prep.catalogs import load_halos

    halos = load_halos(root / "fof.h5")
    with h5py.File(root / "theirs.h5", "w") as h5:
        group = h5.create_group("Groups")
        group["GroupPos"] = halos.position * 1000.0  # kpc/h
        group["GroupVel"] = halos.velocity
        group["GroupMass"] = halos.mass / 1e10
        h5.attrs["BoxSize"] = halos.box_size * 1000.0
        h5.attrs["Redshift"] = halos.redshift
    config = {"position": "GroupPos", "velocity": "GroupVel", "mass": "GroupMass", "group": "Groups",
              "length_unit": "kpc/h", "mass_unit": "1e10 Msun/h", "cosmology": "halo2024"}
    (root / "theirs.json").write_text(json.dumps(config))
    return root, snapshot


@pytest.mark.parametrize("weighting", CONFIG["weightings"])
def test_the_shipped_halo_models_reconstruct_a_users_catalogue(user_catalogue, weighting, tmp_path, monkeypatch):
    folder = SHIPPED[weighting]
    networks = [folder / f"{t}.keras" for t in ("density", "velocity", "momentum") if (folder / f"{t}.keras").exists()]
    assert networks and (folder / "reference-filter.json").exists(), f"nothing ships in {folder}"
    root, snapshot = user_catalogue
    fields = root / f"{weighting}.h5"
    assert velnet(["halo-fields", str(snapshot), "--catalog", str(root / "theirs.h5"), "--catalog-config",
                   str(root / "theirs.json"), "--nmesh", "32", "--los", "z", "--weighting", weighting,
                   "--out", str(fields)]) == 0
    outputs = {"network": root / f"{weighting}-networks.h5", "filter": root / f"{weighting}-filter.h5"}
    assert velnet(["predict", str(fields), *map(str, networks), "--out", str(outputs["network"])]) == 0
    assert velnet(["predict", str(fields), str(folder / "reference-filter.json"), "--out", str(outputs["filter"])]) == 0

    truth = load_fields(fields, ["density", "velocity", "momentum"])
    scores = {}
    for method, path in outputs.items():
        pred = load_fields(path, ["density", "velocity", "momentum"])
        for name, field in pred.items():
            assert np.all(np.isfinite(field.value))
        assert pred["density"].value.mean() == pytest.approx(1.0, abs=0.15)
        scores[method] = {name: agreement(pred[name].value, truth[name].value)["C_r"] for name in pred}
    # a 64 Mpc/h box has none of the training boxes' largest modes: both methods still follow the truth
    assert scores["network"]["velocity"] > 0.7 and scores["filter"]["velocity"] > 0.7
    assert scores["network"]["density"] > 0.3
    # stage two alone, by its shipped name, from another folder: it runs the stage one shipped beside it
    monkeypatch.chdir(tmp_path)
    alone = root / f"{weighting}-velocity-alone.h5"
    assert velnet(["predict", str(fields), f"halo2024-{weighting}/velocity", "--out", str(alone)]) == 0
    np.testing.assert_allclose(load_fields(alone, ["velocity"])["velocity"].value,
                               load_fields(outputs["network"], ["velocity"])["velocity"].value, rtol=1e-5, atol=1e-3)
