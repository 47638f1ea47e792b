"""data_prep.halos: FOF halos, catalogue files, mass channels, halo fields."""
import json

import h5py
import numpy as np
import pytest

pytest.importorskip("nbodykit")

from data_prep.halos import (HaloCatalog, find_halos, halo_fields, load_halos, mass_bins,  # noqa: E402
                             combine_catalogs, paint_halo_channels, particle_mass, read_catalog,
                             save_halos, write_halo_fields, write_halos)
from data_prep.readers import Particles, read_particles  # noqa: E402
from velnet.cosmology import HALO2024, WU2021  # noqa: E402
from velnet.errors import VelnetInputError  # noqa: E402
from velnet.fields import load_fields, read_meta  # noqa: E402

DENSITIES = (1e-4, 1e-3, 2e-3, 3e-3)


def test_particle_mass():
    assert particle_mass(HALO2024, 100.0, 100**3) == pytest.approx(0.268 * 2.775e11, rel=1e-12)
    # the 2024 paper's CosmicGrowth box: 1200 Mpc/h, 2048^3 particles
    assert particle_mass(HALO2024, 1200.0, 2048**3) == pytest.approx(1.496e10, rel=1e-3)


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


def clumps_in_background(box=50.0, seed=4):
    """A sparse background (too sparse for FOF groups) and two tight clumps of 30 particles."""
    rng = np.random.default_rng(seed)
    background = rng.uniform(0, box, (4000, 3))
    centres = np.array([[0.02, 25.0, 25.0], [30.0, 10.0, 40.0]])  # the first straddles x = 0
    clumps = [(c + rng.normal(0, 0.01, (30, 3))) % box for c in centres]
    position = np.concatenate([background] + clumps)
    velocity = np.zeros_like(position)
    velocity[4000:4030] = [100.0, -50.0, 20.0]
    velocity[4030:] = rng.normal(0, 80.0, (30, 3))
    particles = Particles(position, velocity, np.arange(len(position)), box, 0.59, HALO2024, "clumps", "bigfile")
    return particles, centres, velocity


def test_find_halos_finds_the_clumps():
    particles, centres, velocity = clumps_in_background()
    halos = find_halos(particles, nmin=20)
    assert len(halos) == 2
    mp = particle_mass(HALO2024, 50.0, 4060)
    np.testing.assert_allclose(halos.mass, 30 * mp, rtol=1e-6)
    found = halos.position[np.argsort(halos.position[:, 0])]
    # the clump across x = 0 has its centre near 0 (or 50), not at the box centre
    assert min(found[0, 0], 50.0 - found[0, 0]) < 0.05
    np.testing.assert_allclose(found[1], centres[1], atol=0.01)
    first = np.argmin(np.abs(halos.position[:, 1] - 25.0))
    np.testing.assert_allclose(halos.velocity[first], [100.0, -50.0, 20.0], rtol=1e-5)
    np.testing.assert_allclose(halos.velocity[1 - first], velocity[4030:].mean(axis=0), rtol=1e-4, atol=1e-3)
    assert halos.attrs["linking_length"] == 0.2 and halos.attrs["nmin"] == 20
    assert halos.attrs["particle_mass"] == pytest.approx(mp)
    assert np.all((halos.position >= 0) & (halos.position < 50.0))
    assert len(find_halos(particles, nmin=31)) == 0


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    cat = catalogue(rng.uniform(0, 64, (20, 3)), rng.normal(0, 300, (20, 3)), rng.uniform(1e12, 1e14, 20))
    cat.attrs.update(linking_length=0.2, nmin=20)
    path = save_halos(tmp_path / "halos.h5", cat)
    back = load_halos(path)
    for name in ("position", "velocity", "mass"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cat, name))
    assert (back.box_size, back.redshift, back.cosmology) == (64.0, 0.59, HALO2024)
    assert back.attrs == cat.attrs
    assert [p.name for p in tmp_path.iterdir()] == ["halos.h5"]  # no temporary left behind


def test_load_halos_rejects_other_files(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["mass"] = np.ones(3)
    with pytest.raises(VelnetInputError, match="not a velnet halo catalogue") as err:
        load_halos(path)
    assert str(path) in str(err.value)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(VelnetInputError, match="junk.h5"):
        load_halos(tmp_path / "junk.h5")


def known_halos(n=12, box=100.0, seed=6):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, box, (n, 3)), rng.normal(0, 300, (n, 3)), rng.uniform(1e11, 1e14, n)


def test_read_hdf5_halos_and_subhalos_in_kpc(tmp_path):
    pos, vel, mass = known_halos()
    path = tmp_path / "groups.hdf5"
    with h5py.File(path, "w") as h5:
        h5.attrs["BoxSize"] = 100000.0  # kpc/h
        h5.attrs["Redshift"] = 0.59
        for name, part in (("halos", slice(0, 8)), ("subhalos", slice(8, None))):
            g = h5.create_group(name)
            g["Pos"] = pos[part] * 1000.0
            g["Vel"] = vel[part]
            g["M"] = mass[part] / 1e10
    config = {"position": "Pos", "velocity": "Vel", "mass": "M", "group": ["halos", "subhalos"],
              "length_unit": "kpc/h", "mass_unit": "1e10 Msun/h", "cosmology": "halo2024"}
    cat = read_catalog(path, config)
    np.testing.assert_allclose(cat.position, pos, rtol=1e-12)
    np.testing.assert_allclose(cat.velocity, vel, rtol=1e-12)
    np.testing.assert_allclose(cat.mass, mass, rtol=1e-12)
    assert (cat.box_size, cat.redshift, cat.cosmology) == (100.0, 0.59, HALO2024)
    assert cat.attrs["format"] == "hdf5"


def test_read_fits_with_header_metadata(tmp_path):
    from astropy.io import fits

    pos, vel, mass = known_halos()
    columns = [fits.Column(name=n, format="D", array=pos[:, i]) for i, n in enumerate("XYZ")]
    columns += [fits.Column(name="VEL", format="3D", array=vel), fits.Column(name="MASS", format="D", array=mass)]
    table = fits.BinTableHDU.from_columns(columns)
    table.header.update(BOXSIZE=100.0, REDSHIFT=0.59, OMEGAM=0.268, OMEGAB=0.0445, H=0.71, SIGMA8=0.83, NS=0.968)
    path = tmp_path / "halos.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    cat = read_catalog(path, {"position": ["X", "Y", "Z"], "velocity": "VEL", "mass": "MASS"})
    np.testing.assert_allclose(cat.position, pos, rtol=1e-12)
    np.testing.assert_allclose(cat.velocity, vel, rtol=1e-12)
    np.testing.assert_allclose(cat.mass, mass, rtol=1e-12)
    assert (cat.box_size, cat.redshift) == (100.0, 0.59)
    assert cat.cosmology.to_dict() == pytest.approx(HALO2024.to_dict())
    with pytest.raises(VelnetInputError, match="box_size=100.*200") as err:
        read_catalog(path, {"position": ["X", "Y", "Z"], "velocity": "VEL", "mass": "MASS", "box_size": 200.0})
    assert "halos.fits" in str(err.value)


def test_read_text_columns(tmp_path):
    pos, vel, mass = known_halos()
    path = tmp_path / "halos.txt"
    np.savetxt(path, np.column_stack([mass, pos, vel]), header="mass x y z vx vy vz")
    config = {"columns": ["m", "x", "y", "z", "vx", "vy", "vz"], "position": ["x", "y", "z"],
              "velocity": [4, 5, 6], "mass": "m", "box_size": 100.0, "redshift": 0.59,
              "cosmology": HALO2024.to_dict()}
    cat = read_catalog(path, config)
    np.testing.assert_allclose(cat.position, pos, rtol=1e-12)
    np.testing.assert_allclose(cat.velocity, vel, rtol=1e-12)
    np.testing.assert_allclose(cat.mass, mass, rtol=1e-12)


def test_combine_halos_and_subhalos(tmp_path):
    pos, vel, mass = known_halos()
    config = {"columns": ["m", "x", "y", "z", "vx", "vy", "vz"], "position": ["x", "y", "z"],
              "velocity": ["vx", "vy", "vz"], "mass": "m", "box_size": 100.0, "redshift": 0.59,
              "cosmology": "halo2024"}
    parts = []
    for name, part in (("halos.txt", slice(0, 5)), ("subhalos.txt", slice(5, None))):
        np.savetxt(tmp_path / name, np.column_stack([mass, pos, vel])[part])
        parts.append(read_catalog(tmp_path / name, config))
    both = combine_catalogs(parts)
    np.testing.assert_allclose(both.position, pos, rtol=1e-12)
    np.testing.assert_allclose(both.mass, mass, rtol=1e-12)
    assert "subhalos.txt" in both.attrs["source"]
    np.savetxt(tmp_path / "other.txt", np.column_stack([mass, pos, vel]))
    other = read_catalog(tmp_path / "other.txt", {**config, "redshift": 1.0})
    with pytest.raises(VelnetInputError, match="other.txt.*not of the box"):
        combine_catalogs(parts + [other])


@pytest.mark.parametrize("change, message", [
    ({"mass": "mass_200c"}, "cannot read mass"),
    ({"oops": 1}, "unknown keys"),
    ({"box_size": 50.0}, "outside the box"),
    ({"redshift": None}, "lacks"),
    ({"position": ["x", "y"]}, "three"),
    ({"mass_unit": "kg"}, "units"),
    ({"columns": ["a", "b"]}, "7 columns"),
])
def test_read_catalog_rejects_bad_input(tmp_path, change, message):
    pos, vel, mass = known_halos()
    path = tmp_path / "bad.txt"
    np.savetxt(path, np.column_stack([mass, pos, vel]))
    config = {"columns": ["m", "x", "y", "z", "vx", "vy", "vz"], "position": ["x", "y", "z"],
              "velocity": ["vx", "vy", "vz"], "mass": "m", "box_size": 100.0, "redshift": 0.59,
              "cosmology": "halo2024"}
    config.update(change)
    with pytest.raises(VelnetInputError, match=message) as err:
        read_catalog(path, config)
    assert "bad.txt" in str(err.value)


def test_read_catalog_rejects_nan_and_non_positive_mass(tmp_path):
    pos, vel, mass = known_halos()
    config = {"position": "pos", "velocity": "vel", "mass": "mass", "box_size": 100.0, "redshift": 0.59,
              "cosmology": "halo2024"}
    for name, bad, message in (("nan.h5", "vel", "NaN"), ("zero.h5", "mass", "positive")):
        with h5py.File(tmp_path / name, "w") as h5:
            h5["pos"], h5["vel"], h5["mass"] = pos, vel, mass
            h5[bad][0] = np.nan if bad == "vel" else 0.0
        with pytest.raises(VelnetInputError, match=message):
            read_catalog(tmp_path / name, config)


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
                           "momentum", "linear_velocity_s", "linear_momentum_s"}
    np.testing.assert_allclose(loaded["halos_s_0"].value, fields["halos_s_0"].value)
    assert loaded["halos_s_0"].attrs["nhalos"] == attrs["halo_counts"][0]


def test_halo_fields_rejects_a_catalogue_of_another_box(tiny_simulation):
    _, snapshots = tiny_simulation
    particles = read_particles(snapshots[-1])
    other = catalogue([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]], [1e13], box=128.0, redshift=0.0, cosmology=WU2021)
    other.attrs["source"] = "elsewhere.h5"
    with pytest.raises(VelnetInputError, match="elsewhere.h5.*box 128"):
        halo_fields(particles, 16, catalog=other)
