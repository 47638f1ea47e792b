"""read_particles: each format written here by hand, read back, units checked exactly."""
import math

import h5py
import numpy as np
import pytest

pytest.importorskip("nbodykit")
bigfile = pytest.importorskip("bigfile")

from data_prep.readers import detect_format, read_particles  # noqa: E402
from velnet.cosmology import WU2021  # noqa: E402
from velnet.errors import VelnetInputError  # noqa: E402

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
    with pytest.raises(VelnetInputError, match=r"differs from box_size=60"):
        read_particles(path, box_size=60.0, cosmology=MISSING)
    with pytest.raises(VelnetInputError, match=r"lacks cosmological parameters \['Omega_b', 'sigma8', 'n_s'\]"):
        read_particles(path)
    with pytest.raises(VelnetInputError, match="Omega_m=0.31 but cosmology gives 0.3"):
        read_particles(path, cosmology={**MISSING, "Omega_m": 0.3})
    with pytest.raises(VelnetInputError, match="z=1, not redshift=0"):
        read_particles(path, cosmology=MISSING, redshift=0.0)
    p = read_particles(path, cosmology=WU2021, box_size=BOX, redshift=1.0)
    assert p.cosmology == WU2021
