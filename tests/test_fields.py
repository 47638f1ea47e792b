"""Fields files and the cosmology they carry."""
import fcntl
import subprocess

import numpy as np
import pytest

from velnet.errors import VelnetInputError
from velnet.fields.field import Field, FieldsWriter, ln_density, load_fields, read_meta, save_fields
from velnet.physics.cosmology import HALO2024, WU2021, Cosmology


def field(name, shape=(8, 8, 8), value=1.0, box=16.0, **attrs):
    return Field(np.full(shape, value, np.float32), name, box, 0.5, WU2021, attrs)


def test_round_trip_keeps_values_metadata_and_units(tmp_path):
    rng = np.random.default_rng(0)
    velocity = field("velocity", (8, 8, 8, 3)).with_value(rng.normal(size=(8, 8, 8, 3)).astype(np.float32))
    save_fields(tmp_path / "f.h5", [field("density", value=2.0), velocity,
                                    field("halos_s_0", units="n / n_mean", seed=3)], attrs={"note": [1, 2]})
    back = load_fields(tmp_path / "f.h5")
    np.testing.assert_array_equal(back["velocity"].value, velocity.value)
    assert back["velocity"].is_vector and back["velocity"].cell_size == 2.0
    assert back["density"].cosmology == WU2021 and back["density"].redshift == 0.5
    assert back["halos_s_0"].units == "n / n_mean" and back["halos_s_0"].attrs["seed"] == 3
    assert back["density"].units == "rho/rho_mean"
    assert read_meta(tmp_path / "f.h5")["note"] == [1, 2]


def test_ln_density_is_eq_1_of_the_paper():
    np.testing.assert_allclose(ln_density(field("density", value=3.0)).value, np.log(4.0))


@pytest.mark.parametrize("shape", [(8, 8, 4), (8, 8, 8, 2)])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(VelnetInputError, match="must be"):
        field("density", shape)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(VelnetInputError, match="not found"):
        load_fields(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(VelnetInputError, match="text.h5.*not a readable HDF5"):
        load_fields(tmp_path / "text.h5")
    bad = field("density")
    bad.value[1, 2, 3] = np.nan
    save_fields(tmp_path / "nan.h5", [bad])
    with pytest.raises(VelnetInputError, match="nan.h5.*NaN"):
        load_fields(tmp_path / "nan.h5")
    with pytest.raises(VelnetInputError, match="has no field 'velocity'"):
        load_fields(tmp_path / "nan.h5", ["velocity"])
    with pytest.raises(VelnetInputError, match="metadata"):
        save_fields(tmp_path / "mixed.h5", [field("density"), field("velocity", (8, 8, 8, 3), box=32.0)])
    assert not (tmp_path / "mixed.h5").exists()


@pytest.mark.parametrize("cosmology", [WU2021, HALO2024])
@pytest.mark.parametrize("z", [0.0, 0.59, 2.0])
def test_growth_and_hubble_agree_with_nbodykit(cosmology, z):
    nbodykit_cosmology = pytest.importorskip("nbodykit.cosmology")
    # CLASS background, with radiation (which velnet neglects: below 1e-3 at z <= 2).
    ref = nbodykit_cosmology.Cosmology(h=cosmology.h, Omega0_b=cosmology.Omega_b,
                                       Omega0_cdm=cosmology.Omega_cdm, m_ncdm=[])
    a = 1.0 / (1.0 + z)
    assert cosmology.growth_rate(a) == pytest.approx(ref.scale_independent_growth_rate(z), rel=2e-3)
    assert cosmology.growth(a) == pytest.approx(ref.scale_independent_growth_factor(z), rel=2e-3)
    assert cosmology.hubble(a) == pytest.approx(ref.efunc(z) * 100.0, rel=2e-3)


def test_cosmology_round_trips_through_a_dict():
    assert Cosmology.from_dict(HALO2024.to_dict()) == HALO2024
    assert HALO2024.Omega_cdm == pytest.approx(0.2235)


def test_a_process_started_while_a_fields_file_is_written_does_not_keep_it_locked(tmp_path):
    """MPI initialised mid-write (pmesh's first mesh) starts a daemon that inherits every inheritable descriptor;
    HDF5's lock on the file must not go with it, or reading the file back in this process fails."""
    density = Field(np.ones((4, 4, 4), np.float32), "density", 8.0, 0.0, WU2021)
    daemon = None
    try:
        with FieldsWriter(tmp_path / "f.h5", density) as out:
            out.write(density)
            assert fcntl.fcntl(out._h5.id.get_vfd_handle(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            daemon = subprocess.Popen(["sleep", "60"], close_fds=False)
        assert load_fields(tmp_path / "f.h5")["density"].value.sum() == 64
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
