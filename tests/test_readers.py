"""read_particles: each format written here by hand, read back, units checked exactly."""
import math
import re

import h5py
import numpy as np
import pytest

pytest.importorskip("nbodykit")
bigfile = pytest.importorskip("bigfile")

from data_prep.readers import detect_format, read_particles  # noqa: E402
from velnet.errors import VelnetInputError  # noqa: E402
from velnet.physics.cosmology import WU2021  # noqa: E402

BOX = 50.0
A = 0.5
N = 100
MISSING = {"sigma8": WU2021.sigma8, "n_s": WU2021.n_s, "Omega_b": WU2021.Omega_b}

# Gadget-1 header, as the Gadget-2 user guide lays it out, padded to 256 bytes.
GADGET_HEADER = np.dtype([
    ("npart", "<u4", 6), ("massarr", "<f8", 6), ("time", "<f8"), ("redshift", "<f8"),
    ("flag_sfr", "<i4"), ("flag_feedback", "<i4"), ("npartTotal", "<u4", 6),
    ("flag_cooling", "<i4"), ("num_files", "<i4"), ("BoxSize", "<f8"), ("Omega0", "<f8"),
    ("OmegaLambda", "<f8"), ("HubbleParam", "<f8"), ("pad", "u1", 96)])


@pytest.fixture
def particles():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, BOX, (N, 3)).astype(np.float32)
    vel = rng.normal(0, 300, (N, 3)).astype(np.float32)
    ids = np.arange(1000, 1000 + N, dtype=np.uint32)
    return pos, vel, ids


def _record(f, array):
    data = np.ascontiguousarray(array).tobytes()
    marker = np.array([len(data)], "<i4").tobytes()
    f.write(marker + data + marker)


def write_gadget(path, pos, u, ids, box=BOX, a=A, num_files=1, total=None, labelled=False):
    """Gadget file of type-1 particles; `u` is the stored velocity, v / sqrt(a).

    SnapFormat 1, or 2 with `labelled`: each block preceded by a record of its name.
    """
    header = np.zeros(1, GADGET_HEADER)
    header["npart"][0, 1] = len(pos)
    header["npartTotal"][0, 1] = len(pos) if total is None else total
    header["massarr"][0, 1] = 1.0
    header["time"], header["redshift"] = a, 1 / a - 1
    header["num_files"], header["BoxSize"] = num_files, box
    header["Omega0"], header["OmegaLambda"], header["HubbleParam"] = 0.31, 0.69, 0.6777
    with open(path, "wb") as f:
        blocks = (header, pos.astype("<f4"), u.astype("<f4"), ids.astype("<u4"))
        for label, block in zip((b"HEAD", b"POS ", b"VEL ", b"ID  "), blocks):
            if labelled:
                _record(f, np.frombuffer(label + np.array([block.nbytes + 8], "<i4").tobytes(), "u1"))
            _record(f, block)
    return path


def write_hdf5(path, pos, u, ids, box=BOX, a=A):
    with h5py.File(path, "w") as h5:
        hdr = h5.create_group("Header")
        hdr.attrs.update({"NumPart_ThisFile": [0, len(pos), 0, 0, 0, 0],
                          "NumPart_Total": [0, len(pos), 0, 0, 0, 0], "NumFilesPerSnapshot": 1,
                          "BoxSize": box, "Time": a, "Redshift": 1 / a - 1, "Omega0": 0.31,
                          "OmegaLambda": 0.69, "HubbleParam": 0.6777,
                          "MassTable": [0, 1.0, 0, 0, 0, 0]})
        part = h5.create_group("PartType1")
        part["Coordinates"], part["Velocities"], part["ParticleIDs"] = pos, u, ids
    return path


def write_bigfile(path, pos, vel, ids, box=BOX, a=A, cosmology=WU2021, with_ids=True):
    with bigfile.File(str(path), create=True) as ff:
        with ff.create("Header") as block:
            header = {"BoxSize": box, "ScalingFactor": a, "OmegaM": cosmology.Omega_m,
                      "OmegaB": cosmology.Omega_b, "HubbleParam": cosmology.h,
                      "Sigma8": cosmology.sigma8, "SpectralIndex": cosmology.n_s}
            for key, value in header.items():
                block.attrs[key] = value
        ff.create_from_array("1/Position", pos)
        ff.create_from_array("1/Velocity", vel)
        if with_ids:
            ff.create_from_array("1/ID", ids.astype(np.uint64))
    return path


def test_bigfile_round_trip(tmp_path, particles):
    pos, vel, ids = particles
    p = read_particles(write_bigfile(tmp_path / "snap", pos, vel, ids))
    assert p.format == "bigfile" and p.box_size == BOX
    assert p.redshift == pytest.approx(1 / A - 1, abs=1e-12)
    assert p.cosmology == WU2021
    np.testing.assert_array_equal(p.position, pos)
    np.testing.assert_array_equal(p.velocity, vel)  # already peculiar km/s
    np.testing.assert_array_equal(p.ids, ids)


def test_bigfile_without_ids_numbers_particles(tmp_path, particles):
    pos, vel, ids = particles
    p = read_particles(write_bigfile(tmp_path / "snap", pos, vel, ids, with_ids=False))
    np.testing.assert_array_equal(p.ids, np.arange(N))


def test_gadget_units(tmp_path, particles):
    pos, vel, ids = particles
    u = vel / np.float32(math.sqrt(A))
    p = read_particles(write_gadget(tmp_path / "snap", pos, u, ids), cosmology=MISSING)
    assert p.format == "gadget" and p.box_size == BOX and p.redshift == pytest.approx(1.0)
    assert p.cosmology == WU2021
    np.testing.assert_array_equal(p.position, pos)
    np.testing.assert_allclose(p.velocity, u * math.sqrt(A), rtol=1e-6)  # v = sqrt(a) u
    np.testing.assert_array_equal(p.ids, ids)


def test_gadget_snapformat2(tmp_path, particles):
    pos, vel, ids = particles
    path = write_gadget(tmp_path / "snap", pos, vel, ids, labelled=True)
    assert detect_format(path) == "gadget"
    p = read_particles(path, cosmology=MISSING)
    np.testing.assert_array_equal(p.position, pos)
    np.testing.assert_array_equal(p.ids, ids)


def test_gadget_kpc(tmp_path, particles):
    pos, vel, ids = particles
    path = write_gadget(tmp_path / "snap", pos * 1000, vel, ids, box=BOX * 1000)
    p = read_particles(path, cosmology=MISSING, length_unit="kpc/h")
    assert p.box_size == pytest.approx(BOX)
    np.testing.assert_allclose(p.position, pos, rtol=1e-6, atol=1e-5)
    with pytest.raises(VelnetInputError, match="kpc/h"):
        read_particles(path, cosmology=MISSING, box_size=BOX)


def test_gadget_multi_file(tmp_path, particles):
    pos, vel, ids = particles
    for i, half in enumerate((slice(0, 40), slice(40, N))):
        write_gadget(tmp_path / f"snap.{i}", pos[half], vel[half], ids[half], num_files=2, total=N)
    p = read_particles(tmp_path / "snap.0", cosmology=MISSING)
    np.testing.assert_array_equal(np.sort(p.ids), ids)
    with pytest.raises(VelnetInputError, match="name its first file"):
        read_particles(tmp_path / "snap.1", cosmology=MISSING)
    short = write_gadget(tmp_path / "short", pos, vel, ids, total=N + 5)
    with pytest.raises(VelnetInputError, match=f"header counts {N + 5} particles but the files hold {N}"):
        read_particles(short, cosmology=MISSING)
    (tmp_path / "snap.1").unlink()
    with pytest.raises(VelnetInputError, match="missing"):
        read_particles(tmp_path / "snap.0", cosmology=MISSING)


def test_hdf5_units(tmp_path, particles):
    pos, vel, ids = particles
    u = vel / np.float32(math.sqrt(A))
    p = read_particles(write_hdf5(tmp_path / "snap.hdf5", pos, u, ids), cosmology=MISSING)
    assert p.format == "hdf5" and p.box_size == BOX and p.cosmology == WU2021
    np.testing.assert_array_equal(p.position, pos)
    np.testing.assert_allclose(p.velocity, u * math.sqrt(A), rtol=1e-6)
    np.testing.assert_array_equal(p.ids, ids)


def test_detect_and_wrong_format(tmp_path, particles):
    pos, vel, ids = particles
    paths = {"bigfile": write_bigfile(tmp_path / "b", pos, vel, ids),
             "gadget": write_gadget(tmp_path / "g", pos, vel, ids),
             "hdf5": write_hdf5(tmp_path / "h.hdf5", pos, vel, ids)}
    for fmt, path in paths.items():
        assert detect_format(path) == fmt
    with pytest.raises(VelnetInputError, match="is not a hdf5 snapshot"):
        read_particles(paths["gadget"], format="hdf5")
    text = tmp_path / "notes.txt"
    text.write_text("these are not particles\n")
    with pytest.raises(VelnetInputError, match="notes.txt"):
        read_particles(text)


def test_positions_wrapped(tmp_path, particles):
    pos, vel, ids = particles
    pos = pos.copy()
    pos[0] = [-1e-5, BOX, BOX * (1 + 1e-7)]
    p = read_particles(write_bigfile(tmp_path / "snap", pos, vel, ids))
    assert p.position.min() >= 0 and p.position.max() < BOX
    np.testing.assert_allclose(p.position[0], [BOX - 1e-5, 0, 0], atol=1e-4)


def test_missing_file(tmp_path):
    with pytest.raises(VelnetInputError, match="not found"):
        read_particles(tmp_path / "nothing")


@pytest.mark.parametrize("fmt", ["gadget", "hdf5"])
def test_truncated(tmp_path, particles, fmt):
    pos, vel, ids = particles
    write = write_gadget if fmt == "gadget" else write_hdf5
    path = write(tmp_path / "snap", pos, vel, ids)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(VelnetInputError, match="truncated"):
        read_particles(path, cosmology=MISSING)


def test_truncated_bigfile(tmp_path, particles):
    pos, vel, ids = particles
    path = write_bigfile(tmp_path / "snap", pos, vel, ids)
    data = path / "1" / "Velocity" / "000000"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(VelnetInputError, match="truncated"):
        read_particles(path)


@pytest.mark.parametrize("column, value, match", [
    ("pos", np.nan, "positions hold NaN"), ("vel", np.inf, "velocities hold NaN or infinite"),
    ("pos", 2 * BOX, "outside the box"), ("pos", -1.0, "outside the box")])
def test_bad_values(tmp_path, particles, column, value, match):
    pos, vel, ids = (a.copy() for a in particles)
    (pos if column == "pos" else vel)[17, 1] = value
    with pytest.raises(VelnetInputError, match=match):
        read_particles(write_bigfile(tmp_path / "snap", pos, vel, ids))


def test_metadata_disagreements(tmp_path, particles):
    pos, vel, ids = particles
    path = write_gadget(tmp_path / "snap", pos, vel, ids)
    with pytest.raises(VelnetInputError, match=r"differs from --box-size 60"):
        read_particles(path, box_size=60.0, cosmology=MISSING)
    with pytest.raises(VelnetInputError, match=r"lacks cosmological parameters \['Omega_b', 'sigma8', 'n_s'\]"):
        read_particles(path)
    with pytest.raises(VelnetInputError, match="Omega_m=0.31 but --cosmology gives 0.3"):
        read_particles(path, cosmology={**MISSING, "Omega_m": 0.3})
    with pytest.raises(VelnetInputError, match="z=1, not --redshift 0"):
        read_particles(path, cosmology=MISSING, redshift=0.0)
    p = read_particles(path, cosmology=WU2021, box_size=BOX, redshift=1.0)
    assert p.cosmology == WU2021


# --- Other codes' files, painted from the command line and checked against a CIC made here ---

KPC_CM, MPC_CM = 3.085678e21, 3.085678e24
H = WU2021.h
NMESH = 8


def cic(pos, box, nmesh, weight=None):
    """Plain CIC of particles onto grid points i * box / nmesh, per mean particle per cell."""
    x = np.asarray(pos, np.float64) / (box / nmesh)
    i0 = np.floor(x).astype(np.int64)
    f = x - i0
    out = np.zeros((nmesh,) * 3)
    w = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64)
    for corner in np.ndindex(2, 2, 2):
        share = np.prod([f[:, a] if c else 1 - f[:, a] for a, c in enumerate(corner)], axis=0)
        np.add.at(out, tuple((i0[:, a] + c) % nmesh for a, c in enumerate(corner)), share * w)
    return out * nmesh**3 / len(x)


def assert_fields_are_cic(path, pos, vel, box):
    """The fields file holds the CIC density and momentum of particles at `pos` (Mpc/h) with
    peculiar velocities `vel` (km/s) in a box of `box` Mpc/h."""
    from velnet.fields.field import load_fields

    fields = load_fields(path)
    assert fields["density"].box_size == pytest.approx(box, rel=1e-9)
    density = cic(pos, box, NMESH)
    np.testing.assert_allclose(fields["density"].value, density, rtol=1e-4, atol=1e-4)
    for i in range(3):
        momentum = cic(pos, box, NMESH, vel[:, i])
        np.testing.assert_allclose(fields["momentum"].value[..., i], momentum, rtol=1e-4, atol=1e-2)


def gadget4_groups(h5, box, a, units_in="Parameters"):
    """Header, Parameters and Config groups as Gadget-4 writes them (AREPO: units in Header)."""
    header = h5.create_group("Header")
    header.attrs.update({"BoxSize": box, "Time": a, "Redshift": 1 / a - 1, "NumFilesPerSnapshot": 1,
                         "NumPart_ThisFile": np.array([0, N, 0, 0, 0, 0], np.uint64),
                         "NumPart_Total": np.array([0, N, 0, 0, 0, 0], np.uint64),
                         "MassTable": [0, 1.0, 0, 0, 0, 0]})
    params = h5.create_group("Parameters")
    params.attrs.update({"BoxSize": box, "ComovingIntegrationOn": 1, "TimeBegin": 0.02, "TimeMax": 1.0,
                         "Hubble": 0.1, "Sigma8": WU2021.sigma8, "PrimordialIndex": WU2021.n_s})
    h5.create_group("Config").attrs["NTYPES"] = 6
    cosmology = {"Omega0": WU2021.Omega_m, "OmegaLambda": 1 - WU2021.Omega_m,
                 "OmegaBaryon": WU2021.Omega_b, "HubbleParam": H}
    units = {"UnitLength_in_cm": KPC_CM, "UnitVelocity_in_cm_per_s": 1e5, "UnitMass_in_g": 1.989e43}
    h5[units_in].attrs.update({**units, **cosmology})


def write_gadget4(path, pos, vel, ids, layout="gadget4", scale=1000):
    """A Gadget-4 (or AREPO) HDF5 snapshot declaring kpc/h, velocities stored as v / sqrt(a).

    Positions and BoxSize are written as `scale` times their values in Mpc/h (1000: right).
    """
    with h5py.File(path, "w") as h5:
        gadget4_groups(h5, BOX * scale, A, "Parameters" if layout == "gadget4" else "Header")
        part = h5.create_group("PartType1")
        part["Coordinates"] = (pos * scale).astype(np.float64)
        part["Velocities"] = (vel / np.sqrt(A)).astype(np.float32)
        part["ParticleIDs"] = ids.astype(np.uint64)
        if layout == "gadget4":  # Gadget-4's conversion attributes (AREPO's older files lack them)
            for name, a_scaling, h_scaling in (("Coordinates", 1.0, -1.0), ("Velocities", 0.5, 0.0)):
                part[name].attrs.update({"a_scaling": a_scaling, "h_scaling": h_scaling,
                                         "length_scaling": 1.0, "to_cgs": KPC_CM})
    return path


def write_swift(path, pos, vel, ids):
    """A SWIFT snapshot: lengths in Mpc without h, peculiar velocities, Units and Cosmology groups."""
    unit_length, unit_time = 3.08567758e24, 3.08567758e19
    with h5py.File(path, "w") as h5:
        header = h5.create_group("Header")
        header.attrs.update({"BoxSize": np.full(3, BOX / H), "Scale-factor": [A], "Redshift": [1 / A - 1],
                             "NumFilesPerSnapshot": [1], "Code": "SWIFT",
                             "NumPart_ThisFile": np.array([0, N, 0, 0, 0, 0, 0], np.uint64),
                             "NumPart_Total": np.array([0, N, 0, 0, 0, 0, 0], np.uint64),
                             "NumPart_Total_HighWord": np.zeros(7, np.uint64)})
        h5.create_group("Units").attrs.update({
            "Unit length in cgs (U_L)": [unit_length], "Unit mass in cgs (U_M)": [1.98841e43],
            "Unit time in cgs (U_t)": [unit_time], "Unit current in cgs (U_I)": [1.0],
            "Unit temperature in cgs (U_T)": [1.0]})
        h5.create_group("Cosmology").attrs.update({
            "Omega_m": [WU2021.Omega_m], "Omega_lambda": [1 - WU2021.Omega_m - 9e-5], "Omega_r": [9e-5],
            "Omega_b": [WU2021.Omega_b], "h": [H], "Scale-factor": [A], "Redshift": [1 / A - 1]})
        part = h5.create_group("PartType1")
        part["Coordinates"] = pos.astype(np.float64) / H
        part["Velocities"] = vel.astype(np.float32)
        part["ParticleIDs"] = ids.astype(np.uint64)
        part["Masses"] = np.ones(N, np.float32)
        for name, a_exponent in (("Coordinates", 1.0), ("Velocities", 0.0)):
            part[name].attrs.update({"a-scale exponent": [a_exponent], "h-scale exponent": [0.0],
                                     "U_L exponent": [1.0]})
    return path


def paint(*argv):
    from velnet.cli import main

    return main(["paint", *map(str, argv), "--nmesh", str(NMESH)])


@pytest.mark.parametrize("layout", ["gadget4", "arepo"])
def test_gadget4_hdf5_in_kpc_paints_with_no_flags(tmp_path, particles, layout):
    pos, vel, ids = particles
    path = write_gadget4(tmp_path / "snap_005.hdf5", pos, vel, ids, layout)
    p = read_particles(path)
    assert p.cosmology == WU2021  # Omega0, OmegaBaryon, HubbleParam, Sigma8, PrimordialIndex from the file
    assert p.box_size == pytest.approx(BOX) and p.redshift == pytest.approx(1 / A - 1)
    assert paint(path, "--out", tmp_path / "fields.h5") == 0
    assert_fields_are_cic(tmp_path / "fields.h5", pos, vel, BOX)


def test_gadget1_in_kpc_needs_and_takes_length_unit(tmp_path, particles, capsys):
    pos, vel, ids = particles
    path = write_gadget(tmp_path / "snap_005", pos * 1000, vel / np.float32(math.sqrt(A)), ids, box=BOX * 1000)
    assert paint(path, "--cosmology", "wu2021", "--out", tmp_path / "wrong.h5") == 2
    err = capsys.readouterr().err
    assert "box size 50000 Mpc/h" in err and "implausible" in err and "--length-unit kpc/h" in err
    assert not (tmp_path / "wrong.h5").exists()
    assert paint(path, "--length-unit", "kpc/h", "--cosmology", "wu2021", "--out", tmp_path / "fields.h5") == 0
    assert_fields_are_cic(tmp_path / "fields.h5", pos, vel, BOX)


def test_swift_snapshot_in_mpc_without_h(tmp_path, particles):
    pos, vel, ids = particles
    path = write_swift(tmp_path / "snapshot_0005.hdf5", pos, vel, ids)
    assert paint(path, "--cosmology", '{"sigma8": 0.83, "n_s": 0.96}', "--out", tmp_path / "fields.h5") == 0
    assert_fields_are_cic(tmp_path / "fields.h5", pos, vel, BOX)  # Mpc x h = Mpc/h, velocities as stored


def test_length_unit_flag_overrides_the_file(tmp_path, particles, caplog):
    pos, vel, ids = particles
    path = write_gadget4(tmp_path / "snap.hdf5", pos, vel, ids, scale=1)  # declares kpc/h, holds Mpc/h
    with pytest.raises(VelnetInputError, match=r"box size 0.05 Mpc/h \(BoxSize read in kpc/h\) is implausible.*"
                                               r"--length-unit Mpc/h"):
        read_particles(path)
    p = read_particles(path, length_unit="Mpc/h")
    assert p.box_size == pytest.approx(BOX)
    assert ("--length-unit Mpc/h overrides the file's kpc/h (UnitLength_in_cm = 3.085678e+21 in Parameters)"
            in caplog.text)


def test_a_universe_that_is_not_flat_is_refused(tmp_path, particles):
    pos, vel, ids = particles
    path = write_gadget4(tmp_path / "snap.hdf5", pos, vel, ids)
    with h5py.File(path, "a") as h5:
        h5["Parameters"].attrs["OmegaLambda"] = 0.5
    with pytest.raises(VelnetInputError, match="Omega_m=0.31 and Omega_Lambda=0.5: not flat"):
        read_particles(path)


@pytest.mark.parametrize("kwargs, flag", [
    (dict(), "--cosmology"),
    (dict(cosmology=MISSING, box_size=60.0), "--box-size"),
    (dict(cosmology=MISSING, box_size=0.05), "--length-unit kpc/h"),
    (dict(cosmology=MISSING, redshift=0.0), "--redshift"),
    (dict(cosmology=MISSING, format="hdf5"), "--format"),
    (dict(cosmology={**MISSING, "w0": -1}), "--cosmology"),
    (dict(cosmology=MISSING, length_unit="pc"), "--length-unit"),
])
def test_every_metadata_error_names_the_flag_that_fixes_it(tmp_path, particles, kwargs, flag):
    pos, vel, ids = particles
    path = write_gadget(tmp_path / "snap", pos, vel, ids)
    with pytest.raises(VelnetInputError) as err:
        read_particles(path, **kwargs)
    assert flag in str(err.value)
    assert not re.search(r"\b(box_size|length_unit|cosmology|redshift|format)=", str(err.value))


def test_missing_box_size_and_redshift_name_their_flags(tmp_path, particles):
    pos, vel, ids = particles
    path = write_gadget4(tmp_path / "snap.hdf5", pos, vel, ids)
    with h5py.File(path, "a") as h5:
        for group in ("Header", "Parameters"):
            for key in ("BoxSize", "Time", "Redshift"):
                if key in h5[group].attrs:
                    del h5[group].attrs[key]
    with pytest.raises(VelnetInputError, match="header has no BoxSize; give it with --box-size"):
        read_particles(path)
    with pytest.raises(VelnetInputError, match="no scale factor or redshift; give it with --redshift"):
        read_particles(path, box_size=BOX)
    assert read_particles(path, box_size=BOX, redshift=1.0).box_size == BOX
