"""data_prep.catalogs and data_prep.hbt: velnet's halo files, other codes' columns (HDF5, FITS, text), HBT+
subhalos in HBT+'s own layout, halos and subhalos combined."""
import h5py
import numpy as np
import pytest

from data_prep.catalogs import HaloCatalog, combine_catalogs, load_halos, read_catalog, save_halos
from data_prep.hbt import halos_and_subhalos, is_hbt, read_hbt
from velnet.errors import VelnetInputError
from velnet.physics.cosmology import HALO2024, WU2021

BOX = 100.0  # Mpc/h
A = 1 / 1.59  # z = 0.59, the 2024 paper's redshift

# Part of HBT+'s Subhalo_t record, in its order (src/io/subhalo_io.cpp): HBTInt is int64, HBTReal float.
SUBHALO = np.dtype([
    ("TrackId", "<i8"), ("Nbound", "<i8"), ("Mbound", "<f4"), ("HostHaloId", "<i8"), ("Rank", "<i8"),
    ("Depth", "<i4"), ("LastMaxMass", "<f4"), ("SnapshotIndexOfLastMaxMass", "<i4"), ("VmaxPhysical", "<f4"),
    ("M200Crit", "<f4"), ("SpecificAngularMomentum", "<f4", (3,)), ("InertialTensor", "<f4", (6,)),
    ("ComovingMostBoundPosition", "<f4", (3,)), ("PhysicalMostBoundVelocity", "<f4", (3,)),
    ("ComovingAveragePosition", "<f4", (3,)), ("PhysicalAverageVelocity", "<f4", (3,)), ("SinkTrackId", "<i8")])

# (host, rank, Nbound, Mbound in 1e10 Msun/h): host 0 with two satellites and an orphan, host 1
# with one satellite, host 2 alone, and a field subhalo.
ROWS = [(0, 0, 5000, 500.0), (0, 1, 300, 30.0), (0, 2, 40, 4.0), (0, 3, 1, 0.01),
        (1, 0, 900, 90.0), (1, 1, 100, 10.0),
        (2, 0, 60, 6.0),
        (-1, 0, 25, 2.5)]


def subhalo_table(rng):
    table = np.zeros(len(ROWS), SUBHALO)
    table["TrackId"] = np.arange(len(ROWS)) + 100
    table["HostHaloId"], table["Rank"], table["Nbound"], table["Mbound"] = map(np.array, zip(*ROWS))
    table["ComovingMostBoundPosition"] = rng.uniform(0, BOX * 1000, (len(ROWS), 3))  # kpc/h
    table["PhysicalAverageVelocity"] = rng.normal(0, 300, (len(ROWS), 3))
    table["PhysicalMostBoundVelocity"] = table["PhysicalAverageVelocity"] + 50
    table["SinkTrackId"] = -1
    return table


def write_hbt(root, table, nfiles=2, snapshot=5, cosmology=HALO2024, params="Parameters.log", total=None,
              box=BOX, a=A):
    """An HBT+ (MPI version) output: SubhaloPath/Parameters.log and SSS/SubSnap_SSS.N.hdf5."""
    root.mkdir(parents=True, exist_ok=True)
    (root / params).write_text(
        "#VERSION 1.12.0.MPI\nSnapshotPath  /sims/cg\nHaloPath  /sims/cg/groups\nSubhaloPath  "
        f"{root}\nSnapshotFileBase  snapshot\nMaxSnapshotIndex  {snapshot}\nBoxSize  {box * 1000:g}\n"
        "SofteningHalo  10\nSnapshotFormat  gadget\nMassInMsunh  1e+10\nLengthInMpch  0.001\nVelInKmS  1\n"
        "#GroupLoadedFullParticle  0\n")
    folder = root / f"{snapshot:03d}"
    folder.mkdir()
    for i, part in enumerate(np.array_split(table, nfiles)):
        with h5py.File(folder / f"SubSnap_{snapshot:03d}.{i}.hdf5", "w") as h5:
            h5["NumberOfFiles"] = np.array([nfiles], np.int32)
            h5["SnapshotId"] = np.array([snapshot], np.int32)
            h5["NumberOfSubhalosInAllFiles"] = np.array([len(table) if total is None else total], np.int64)
            h5["NumberOfNewSubhalos"], h5["NumberOfFakeHalos"] = np.zeros(1, np.int64), np.zeros(1, np.int64)
            h5["Cosmology/OmegaM0"] = np.array([cosmology.Omega_m], np.float32)
            h5["Cosmology/OmegaLambda0"] = np.array([1 - cosmology.Omega_m], np.float32)
            h5["Cosmology/HubbleParam"] = np.array([100 * float(cosmology.efunc(a))], np.float32)  # H(z), not h
            h5["Cosmology/ScaleFactor"] = np.array([a], np.float32)
            h5.create_dataset("NestedSubhalos", (len(part),), dtype=h5py.vlen_dtype(np.int64))
            h5["Subhalos"] = part
    return folder / f"SubSnap_{snapshot:03d}.0.hdf5"


@pytest.fixture
def hbt(tmp_path):
    table = subhalo_table(np.random.default_rng(3))
    return write_hbt(tmp_path / "subcat", table), table


def test_read_hbt_units_and_columns(hbt):
    path, table = hbt
    assert is_hbt(path) and not is_hbt(path.parent.parent / "Parameters.log")
    sub = read_hbt(path, cosmology="halo2024")
    assert len(sub) == len(ROWS) and sub.box_size == pytest.approx(BOX)
    assert sub.redshift == pytest.approx(0.59, abs=1e-6) and sub.cosmology == HALO2024
    np.testing.assert_array_equal(sub.track_id, table["TrackId"])
    np.testing.assert_array_equal(sub.host_id, table["HostHaloId"])
    np.testing.assert_array_equal(sub.rank, table["Rank"])
    np.testing.assert_allclose(sub.mass, table["Mbound"].astype(np.float64) * 1e10)  # Msun/h
    np.testing.assert_allclose(sub.position, table["ComovingMostBoundPosition"] / 1000, rtol=1e-6)  # kpc/h -> Mpc/h
    np.testing.assert_allclose(sub.velocity, table["PhysicalAverageVelocity"], rtol=1e-6)  # peculiar km/s
    assert sub.attrs["files"][1].endswith("SubSnap_005.1.hdf5")


def test_halos_and_subhalos_combined(hbt):
    path, table = hbt
    cat = halos_and_subhalos(read_hbt(path, cosmology=HALO2024))
    # three hosts (at their centrals, with the bound mass of their resolved subhalos) and the field
    # subhalo, then the three resolved satellites; the orphan (Nbound = 1) is left out
    expected = np.array([500 + 30 + 4, 90 + 10, 6, 2.5, 30, 4, 10]) * 1e10
    np.testing.assert_allclose(cat.mass, expected, rtol=1e-6)
    rows = [0, 4, 6, 7, 1, 2, 5]
    np.testing.assert_allclose(cat.position, table["ComovingMostBoundPosition"][rows] / 1000, rtol=1e-6)
    np.testing.assert_allclose(cat.velocity, table["PhysicalAverageVelocity"][rows], rtol=1e-6)
    assert cat.attrs["nhalos"] == 4 and cat.attrs["nsubhalos"] == 3
    assert cat.box_size == pytest.approx(BOX) and cat.cosmology == HALO2024


def test_a_host_without_central_is_refused(tmp_path):
    table = subhalo_table(np.random.default_rng(4))
    table["Rank"][4] = 2  # host 1 loses its central
    path = write_hbt(tmp_path / "subcat", table)
    with pytest.raises(VelnetInputError, match="exactly one resolved central"):
        halos_and_subhalos(read_hbt(path, cosmology=HALO2024))


def test_old_versions_param_file_and_one_file(tmp_path):
    table = subhalo_table(np.random.default_rng(5))
    path = write_hbt(tmp_path / "subcat", table, nfiles=1, params="VER1.8.4.param")
    assert len(read_hbt(path, cosmology=HALO2024)) == len(ROWS)


@pytest.mark.parametrize("problem, match", [
    ("no parameters", "no HBT\\+ parameter file"),
    ("missing file", "spans 2 files but .*SubSnap_005.1.hdf5"),
    ("count", "NumberOfSubhalosInAllFiles is 9 but 2 file\\(s\\) hold 8"),
    ("column", "lacks the HBT\\+ columns \\['HostHaloId'\\]"),
    ("cosmology", "lack \\['Omega_b', 'h', 'n_s'\\].*H\\(z\\), not h.*--cosmology"),
    ("other cosmology", "Omega_m=0.268 but --cosmology gives 0.31"),
    ("box", "box size 100 Mpc/h .* differs from --box-size 200"),
])
def test_bad_catalogues_name_file_and_problem(tmp_path, problem, match):
    table = subhalo_table(np.random.default_rng(6))
    if problem == "column":
        names = [n for n in SUBHALO.names if n != "HostHaloId"]
        table = np.array(table[names].tolist(), np.dtype([(n, SUBHALO.fields[n][0]) for n in names]))
    path = write_hbt(tmp_path / "subcat", table, total=9 if problem == "count" else None)
    if problem == "no parameters":
        (tmp_path / "subcat" / "Parameters.log").unlink()
    if problem == "missing file":
        path.with_name("SubSnap_005.1.hdf5").unlink()
    kwargs = {"cosmology": {"sigma8": 0.8}} if problem == "cosmology" else {"cosmology": HALO2024}
    if problem == "other cosmology":
        kwargs = {"cosmology": WU2021}
    with pytest.raises(VelnetInputError, match=match) as err:
        read_hbt(path, box_size=200.0 if problem == "box" else None, **kwargs)
    assert "subcat" in str(err.value)


def test_halo_fields_from_an_hbt_catalogue(tmp_path, tiny_simulation):
    """`velnet halo-fields --catalog SubSnap...` paints the combined tracers in redshift space."""
    from velnet.cli import main
    from velnet.fields.field import load_fields, read_meta

    config, snapshots = tiny_simulation  # 64 Mpc/h, z = 1 and 0, WU2021
    rng = np.random.default_rng(7)
    table = subhalo_table(rng)
    table["ComovingMostBoundPosition"] = rng.uniform(0, 64000, (len(ROWS), 3))
    path = write_hbt(tmp_path / "subcat", table, snapshot=3, cosmology=WU2021, box=64.0, a=1.0)
    out = tmp_path / "halo-fields.h5"
    assert main(["halo-fields", str(snapshots[-1]), "--catalog", str(path), "--cosmology", "wu2021",
                 "--nmesh", "16", "--out", str(out)]) == 0
    meta = read_meta(out)
    assert meta["nhalos"] == 7 and meta["halo_catalog"]["finder"] == "HBT+"
    fields = load_fields(out)
    total = sum(fields[f"halos_s_{j}"].value for j in range(4))
    assert total.mean() == pytest.approx(1.0, rel=1e-5)  # every tracer painted (number weighting)


def catalogue(position, velocity, mass, box=64.0, redshift=0.59, cosmology=HALO2024):
    return HaloCatalog(np.asarray(position, float), np.asarray(velocity, float), np.asarray(mass, float),
                       box, redshift, cosmology, {"source": "test"})


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
