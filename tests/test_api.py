"""velnet as a Python library: `import velnet` is light, and its functions work on numpy arrays."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import velnet
from velnet.api import as_cosmology
from velnet.fields.field import Field
from velnet.physics.classical import ClassicalEstimator
from velnet.physics.cosmology import HALO2024, WU2021
from velnet.shipped import DEFAULT_MODEL, model_path, shipped_models

ROOT = Path(__file__).resolve().parents[1]


def test_import_velnet_loads_neither_tensorflow_nor_nbodykit():
    code = ("import sys, velnet; velnet.reconstruct, velnet.evaluate, velnet.prepare; import velnet.cli; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'nbodykit', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    assert set(velnet.__all__) >= {"reconstruct", "load_fields", "save_fields", "paint", "fit_classical", "evaluate"}


def test_reconstruct_a_numpy_density_with_velnets_default():
    rho = np.exp(0.5 * np.random.default_rng(0).standard_normal((16, 16, 16))).astype(np.float32)
    out = velnet.reconstruct(rho, box_size=32.0, redshift=0.0)  # the shipped classical estimator's cosmology
    assert set(out) == {"velocity", "momentum"} and out["velocity"].value.shape == (16, 16, 16, 3)
    density = Field(rho, "density", 32.0, 0.0, WU2021)
    expected = ClassicalEstimator.load(model_path(DEFAULT_MODEL)).velocity(density).value
    np.testing.assert_allclose(out["velocity"].value, expected, rtol=1e-6)
    np.testing.assert_allclose(out["momentum"].value, rho[..., None] * expected, rtol=1e-6)
    assert out["velocity"].units == "km/s" and out["velocity"].cosmology == WU2021
    other = velnet.reconstruct(rho, box_size=32.0, redshift=0.59, cosmology="halo2024")["velocity"]
    assert other.cosmology == HALO2024 and not np.allclose(other.value, expected)


@pytest.mark.parametrize("call, message", [
    (lambda rho: velnet.reconstruct(rho, redshift=0.0), "needs its box_size"),
    (lambda rho: velnet.reconstruct(rho, box_size=32.0, redshift=0.0, model="no-such-model"),
     "no-such-model: is neither a model file nor a shipped model"),
    (lambda rho: velnet.reconstruct(-rho, box_size=32.0, redshift=0.0), "finite and >= 0"),
    (lambda rho: velnet.reconstruct(rho, box_size=24.0, redshift=0.0), "cell size 1.5 Mpc/h"),
    (lambda rho: velnet.reconstruct(), "needs a density"),
])
def test_reconstruct_refuses_what_it_cannot_use(call, message):
    with pytest.raises(velnet.VelnetInputError, match=message):
        call(np.ones((16, 16, 16), np.float32))


def test_shipped_models_by_name_and_cosmologies_by_preset():
    names = shipped_models()
    assert "classical-wu2021/velocity" in names and "wu2021-tiny-paper/velocity" in names
    assert model_path("wu2021-tiny-paper") == names["wu2021-tiny-paper/velocity"]
    estimator, metadata = velnet.load_model()
    assert isinstance(estimator, ClassicalEstimator) and metadata is None
    assert as_cosmology("wu2021") == WU2021 and as_cosmology(WU2021.to_dict()) == WU2021
    assert as_cosmology('{"Omega_m": 0.3, "Omega_b": 0.05, "h": 0.7, "sigma8": 0.8, "n_s": 0.96}').h == 0.7
    with pytest.raises(velnet.VelnetInputError, match="needs Omega_m"):
        as_cosmology({"sigma8": 0.8})
