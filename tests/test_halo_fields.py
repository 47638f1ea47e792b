"""data_prep.halo_fields: mass channels, redshift-space halo channels and the halo fields of a snapshot."""
import json

import numpy as np
import pytest

pytest.importorskip("nbodykit")

from data_prep.catalogs import HaloCatalog, load_halos  # noqa: E402
from data_prep.fof import write_halos  # noqa: E402
from data_prep.halo_fields import halo_fields, mass_bins, paint_halo_channels, write_halo_fields  # noqa: E402
from data_prep.readers import read_particles  # noqa: E402
from velnet.errors import VelnetInputError  # noqa: E402
from velnet.fields.field import load_fields, read_meta  # noqa: E402
from velnet.physics.cosmology import HALO2024, WU2021  # noqa: E402

DENSITIES = (1e-4, 1e-3, 2e-3, 3e-3)


def test_mass_edges_of_known_masses():
    # V = 1e4 (Mpc/h)^3: the channels close after the 1, 10, 20 and 30 heaviest halos
    mass = np.random.default_rng(0).permutation(np.arange(1.0, 51.0)) * 1e12
    bins = mass_bins(mass, 1e4, DENSITIES)
    np.testing.assert_array_equal(bins.counts, [1, 9, 10, 10])
    np.testing.assert_allclose(bins.edges, np.array([50, 50, 41, 31, 21]) * 1e12)
    np.testing.assert_allclose(bins.reached, DENSITIES)
    for j, (lo, hi) in enumerate(zip(bins.edges[1:], bins.edges[:-1])):
        inside = mass[bins.channel == j]
        assert inside.min() == lo and inside.max() <= hi
    assert np.all(mass[bins.channel == -1] < 21e12) and (bins.channel == -1).sum() == 20
    assert json.loads(json.dumps(bins.to_dict()))["halo_counts"] == [1, 9, 10, 10]


def test_mass_bins_short_catalogue_uses_all_halos_and_warns():
    mass = np.arange(1.0, 26.0)
    with pytest.warns(UserWarning, match="short of 0.003"):
        bins = mass_bins(mass, 1e4, DENSITIES)
    np.testing.assert_array_equal(bins.counts, [1, 9, 10, 5])
    assert (bins.channel >= 0).all()
    np.testing.assert_allclose(bins.reached, [1e-4, 1e-3, 2e-3, 2.5e-3])
    assert bins.edges[-1] == 1.0


def test_mass_bins_equal_masses_keep_the_counts():
    mass = np.full(40, 5e12)
    bins = mass_bins(mass, 1e4, DENSITIES)
    np.testing.assert_array_equal(bins.counts, [1, 9, 10, 10])
    np.testing.assert_array_equal(bins.channel[:30], np.repeat([0, 1, 2, 3], [1, 9, 10, 10]))


@pytest.mark.parametrize("densities", [(1e-3, 1e-4), (0.0, 1e-3), ()])
def test_mass_bins_rejects_bad_densities(densities):
    with pytest.raises(VelnetInputError, match="increasing"):
        mass_bins(np.ones(5), 1e4, densities)


def catalogue(position, velocity, mass, box=64.0, redshift=0.59, cosmology=HALO2024):
    return HaloCatalog(np.asarray(position, float), np.asarray(velocity, float), np.asarray(mass, float),
                       box, redshift, cosmology, {"source": "test"})


def a_hubble(z, cosmology):
    a = 1.0 / (1.0 + z)
    return a * float(cosmology.hubble(a))


@pytest.mark.parametrize("weighting", ["number", "mass"])
def test_paint_channels_on_mesh_nodes(weighting):
    # V = 64^3: channels of 26, 262, 524, 786 halos; 3 halos fill channel 0 only
    box, nmesh = 64.0, 8
    cell = box / nmesh
    position = np.array([[1, 2, 7], [3, 3, 3], [5, 0, 6]], dtype=float) * cell
    velocity = np.zeros((3, 3))
    velocity[0, 2] = 1.5 * cell * a_hubble(0.59, HALO2024)  # node 7 -> 8.5: crosses the face to 0.5
    velocity[1, 2] = -1.0 * cell * a_hubble(0.59, HALO2024)  # node 3 -> 2
    mass = np.array([4e13, 2e13, 1e13])
    with pytest.warns(UserWarning, match="short of"):
        fields, bins, meta = paint_halo_channels(catalogue(position, velocity, mass), nmesh, "z", weighting)
    assert [f.name for f in fields] == ["halos_s_0", "halos_s_1", "halos_s_2", "halos_s_3"]
    weight = mass if weighting == "mass" else np.ones(3)
    per_cell = weight.sum() / nmesh**3
    assert meta["mean_weight_per_cell"] == pytest.approx(per_cell)
    expected = np.zeros((nmesh,) * 3)
    expected[1, 2, 0] = expected[1, 2, 1] = 0.5 * weight[0] / per_cell  # half way between nodes 0 and 1
    expected[3, 3, 2] = weight[1] / per_cell
    expected[5, 0, 6] = weight[2] / per_cell
    np.testing.assert_allclose(fields[0].value, expected, rtol=1e-5)
    for f in fields[1:]:
        assert not f.value.any()
    total = sum(f.value for f in fields)
    assert total.mean() == pytest.approx(1.0, rel=1e-5)
    assert meta["los"] == "z" and meta["weighting"] == weighting
    assert meta["halo_counts"] == [3, 0, 0, 0]
    assert meta["number_densities_reached"][-1] == pytest.approx(3 / box**3)


def test_paint_channels_weighting_and_unselected_halos():
    # V = 1e4 * 8: N_j = 8, 80, 160, 240; the 10 lightest of 250 halos stay out
    box, nmesh = (8e4) ** (1 / 3), 8
    rng = np.random.default_rng(3)
    mass = rng.uniform(1e12, 1e14, 250)
    cat = catalogue(rng.uniform(0, box, (250, 3)), rng.normal(0, 300, (250, 3)), mass, box=box)
    fields, bins, meta = paint_halo_channels(cat, nmesh, 0, "mass")
    assert meta["halo_counts"] == [8, 72, 80, 80]
    selected = bins.channel >= 0
    shares = [f.value.mean() for f in fields]
    np.testing.assert_allclose(shares, [mass[bins.channel == j].sum() / mass[selected].sum() for j in range(4)],
                               rtol=1e-5)
    with pytest.raises(VelnetInputError, match="weighting"):
        paint_halo_channels(cat, nmesh, 0, "luminosity")


def test_halo_fields_of_a_simulation(tmp_path, tiny_simulation):
    _, snapshots = tiny_simulation
    particles = read_particles(snapshots[-1])
    with pytest.warns(UserWarning, match="short of"):
        fields, attrs = halo_fields(particles, 16, los="y", weighting="mass", nmin=8)
    channels = [fields[f"halos_s_{j}"] for j in range(4)]
    assert all(f.value.shape == (16,) * 3 for f in channels)
    assert sum(f.value for f in channels).mean() == pytest.approx(1.0, rel=1e-4)
    assert attrs["nhalos"] > 10 and attrs["halo_catalog"]["nmin"] == 8
    assert attrs["number_densities_reached"][-1] == pytest.approx(attrs["nhalos"] / 64.0**3)
    assert sum(attrs["halo_counts"]) == attrs["nhalos"]
    assert attrs["los"] == "y" and attrs["weighting"] == "mass"
    assert 1.0 < attrs["beta"] < 10.0  # massive halos are biased
    assert fields["velocity"].value.shape == (16,) * 3 + (3,)
    assert fields["linear_velocity_s"].value.shape == (16,) * 3 + (3,)
    assert np.std(fields["linear_velocity_s"].value) > 1.0
    # the linear velocity correlates with the true velocity on large scales
    corr = np.corrcoef(fields["linear_velocity_s"].value.ravel(), fields["velocity"].value.ravel())[0, 1]
    assert corr > 0.3

    found = write_halos(snapshots[-1], tmp_path / "halos.h5", nmin=8)
    assert len(found) == attrs["nhalos"]
    with pytest.warns(UserWarning):
        out = write_halo_fields(snapshots[-1], tmp_path / "fields.h5", 16, catalog=load_halos(tmp_path / "halos.h5"),
                                los="y", weighting="mass")
    meta = read_meta(out)
    assert meta["beta"] == pytest.approx(attrs["beta"], rel=1e-6)
    assert meta["mass_edges_msun_h"] == pytest.approx(attrs["mass_edges_msun_h"])
    loaded = load_fields(out)
    assert set(loaded) == {"halos_s_0", "halos_s_1", "halos_s_2", "halos_s_3", "density", "velocity",
                           "momentum", "linear_velocity_s", "linear_momentum_s", "linear_density_s"}
    # the linear real-space density from the redshift-space halos follows the matter density
    corr = np.corrcoef(loaded["linear_density_s"].value.ravel(), loaded["density"].value.ravel())[0, 1]
    assert corr > 0.3 and loaded["linear_density_s"].value.mean() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(loaded["halos_s_0"].value, fields["halos_s_0"].value)
    assert loaded["halos_s_0"].attrs["nhalos"] == attrs["halo_counts"][0]


def test_halo_fields_rejects_a_catalogue_of_another_box(tiny_simulation):
    _, snapshots = tiny_simulation
    particles = read_particles(snapshots[-1])
    other = catalogue([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]], [1e13], box=128.0, redshift=0.0, cosmology=WU2021)
    other.attrs["source"] = "elsewhere.h5"
    with pytest.raises(VelnetInputError, match="elsewhere.h5.*box 128"):
        halo_fields(particles, 16, catalog=other)
