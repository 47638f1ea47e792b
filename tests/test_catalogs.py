"""HBT+ subhalo catalogues written in HBT+'s own layout, read back; halos and subhalos combined."""
import h5py
import numpy as np
import pytest

from data_prep.catalogs import halos_and_subhalos, is_hbt, read_hbt
from velnet.cosmology import HALO2024, WU2021
from velnet.errors import VelnetInputError

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
    from velnet.fields import load_fields, read_meta

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
