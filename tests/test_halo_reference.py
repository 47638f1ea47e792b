"""The classical references for halos: the per-(k, mu) filter and the iterative reconstruction, on known fields."""
import numpy as np
import pytest
from boxes import gaussian, halo_field

from velnet.fields.field import Field
from velnet.physics.cosmology import HALO2024
from velnet.physics.halo_filter import HaloFilter
from velnet.physics.linear import linear_velocity, wavevectors
from velnet.physics.reconstruction import Reconstruction, displacement
from velnet.statistics.pixels import agreement

N, BOX, LOS = 32, 128.0, 2
BIASES = (3.0, 2.0, 1.5, 1.2)
"""Linear biases of the four synthetic channels."""


def growth_rate():
    return HALO2024.growth_rate(1 / 1.59)


def kaiser(delta, bias, sigma=0.1):
    """(b + f mu^2) delta(k), the linear redshift-space contrast of tracers of bias b along z."""
    full, _, k2 = wavevectors(N, BOX)
    mu2 = np.divide(full[LOS] ** 2, k2, out=np.zeros_like(k2), where=k2 > 0)
    return np.fft.irfftn((bias + growth_rate() * mu2) * np.fft.rfftn(delta), s=delta.shape, axes=(0, 1, 2))


def synthetic_box(seed, noise=0.3, sigma=0.1):
    """Four halo channels: Kaiser-distorted tracers of a Gaussian matter field plus white noise, and the truths.

    The matter contrast has rms `sigma`; each channel holds a quarter of the tracers (mean 1/4) and noise of
    rms `noise` times its signal's; the velocity is linear theory of the matter field.
    """
    delta = sigma * gaussian(N, seed, box=BOX)[0]
    rng = np.random.default_rng(100 + seed)
    channels = {}
    for j, b in enumerate(BIASES):
        signal = kaiser(delta, b)
        channels[f"halos_s_{j}"] = halo_field(0.25 * (1 + signal + noise * signal.std() * rng.standard_normal(
            delta.shape)), f"halos_s_{j}", BOX)
    density = halo_field(1 + delta, "density", BOX)
    return {**channels, "density": density, "velocity": linear_velocity(density)}


def cr(a, b):
    return agreement(np.asarray(a), np.asarray(b))["C_r"]


def test_the_filter_recovers_matter_and_velocity_of_other_boxes_better_than_one_bias():
    fitted = HaloFilter.fit([synthetic_box(1, noise=2.0), synthetic_box(2, noise=2.0)], los="z", log_radii=())
    test = synthetic_box(3, noise=2.0)
    pred = fitted.predict(test)
    total = sum(test[f"halos_s_{j}"].value for j in range(4)) - 1
    beta = float(np.std(total) / np.std(test["density"].value - 1))
    eq2 = linear_velocity(halo_field(1 + total / beta, "density", BOX))
    # noisy channels (noise twice the signal): the filter weighs them by their signal to noise
    assert cr(pred["velocity"].value, test["velocity"].value) > cr(eq2.value, test["velocity"].value) + 0.02
    assert cr(pred["density"].value, test["density"].value) > 0.7
    amplitude = np.std(pred["velocity"].value) / np.std(test["velocity"].value)
    assert 0.8 < amplitude < 1.0  # minimum variance: below the truth's, never above
    np.testing.assert_allclose(pred["momentum"].value, pred["density"].value[..., None] * pred["velocity"].value,
                               rtol=1e-5, atol=1e-3)


def test_the_filter_learns_the_kaiser_factor_without_noise():
    fitted = HaloFilter.fit([synthetic_box(1, noise=0.0)], los="z", log_radii=(), mu_powers=(0, 2, 4, 6))
    test = synthetic_box(2, noise=0.0)
    pred = fitted.predict(test)
    assert cr(pred["density"].value, test["density"].value) > 0.995
    assert cr(pred["velocity"].value, test["velocity"].value) > 0.995


def test_the_filter_round_trips_through_its_file(tmp_path):
    fitted = HaloFilter.fit([synthetic_box(1)], los="z", log_radii=(4.0,))
    path = fitted.save(tmp_path / "filter.json")
    from velnet.physics.references import load_reference, reference_format

    assert reference_format(path) == "velnet-halo-filter"
    assert isinstance(load_reference(path), HaloFilter)
    again = HaloFilter.load(path)
    box = synthetic_box(2)
    np.testing.assert_array_equal(again.predict(box)["velocity"].value, fitted.predict(box)["velocity"].value)


def test_the_filter_file_is_checked(tmp_path):
    from velnet.errors import VelnetInputError

    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "velnet-halo-filter", "kedges": [0, 1]}')
    with pytest.raises(VelnetInputError, match="bad.json.*not a velnet halo filter file"):
        HaloFilter.load(bad)
    fitted = HaloFilter.fit([synthetic_box(1)], los="z", log_radii=())
    small = {k: Field(v.value[::2, ::2, ::2], k, BOX, 0.59, HALO2024) for k, v in synthetic_box(2).items()
             if k.startswith("halos")}
    with pytest.raises(VelnetInputError, match="cell size"):
        fitted.predict(small)


def test_reconstruction_of_linear_kaiser_tracers_is_linear_theory_of_the_real_space_field():
    """Small displacements: the iterations undo the Kaiser factor, and f a H psi is the linear velocity of the
    smoothed real-space field."""
    delta = 0.05 * gaussian(N, 4, box=BOX)[0]
    b, radius = 1.5, 8.0
    halos = halo_field(1 + kaiser(delta, b), "halos_s", BOX)
    psi, rec_delta = displacement(halos, b, radius, "z")
    _, _, k2 = wavevectors(N, BOX)
    smoothed = np.fft.irfftn(np.fft.rfftn(delta) * np.exp(-0.5 * k2 * radius ** 2), s=delta.shape, axes=(0, 1, 2))
    expected = linear_velocity(halo_field(1 + smoothed, "density", BOX)).value
    from velnet.physics.linear import growth_velocity_factor

    velocity = psi * growth_velocity_factor(halos)
    assert cr(velocity, expected) > 0.99
    assert np.std(velocity) / np.std(expected) == pytest.approx(1.0, abs=0.05)
    assert cr(rec_delta, smoothed) > 0.99


def test_reconstruction_fits_its_radius_and_bias_and_round_trips(tmp_path):
    boxes = [synthetic_box(s, noise=0.1) for s in (1, 2)]
    fitted = Reconstruction.fit(boxes, betas=[2.0, 2.0], los="z", radii=(4.0, 8.0), bias_scales=(0.8, 1.0, 1.25))
    assert fitted.smoothing in (4.0, 8.0)
    again = Reconstruction.load(fitted.save(tmp_path / "rec.json"))
    test = synthetic_box(3, noise=0.1)
    pred = again.predict(test)
    assert cr(pred["velocity"].value, test["velocity"].value) > 0.9
    assert set(pred) == {"density", "velocity", "momentum"}


def test_moved_channels_undo_the_kaiser_factor_and_keep_each_channel_total():
    """Linear Kaiser tracers moved by the reconstruction: each channel's response to the matter no longer
    depends on mu (its redshift-space one grows as b + f mu^2), and its sum is kept."""
    delta = 0.05 * gaussian(N, 4, box=BOX)[0]
    box = {f"halos_s_{j}": halo_field(0.25 * (1 + kaiser(delta, b)), f"halos_s_{j}", BOX)
           for j, b in enumerate(BIASES[:2])}
    total_bias = np.mean(BIASES[:2])
    moved = Reconstruction(total_bias, 8.0, LOS).moved_channels(box)
    full, _, k2 = wavevectors(N, BOX)
    mu2 = np.divide(full[LOS] ** 2, k2, out=np.zeros_like(k2), where=k2 > 0)
    low = (k2 > 0) & (k2 < 0.12 ** 2)
    delta_k = np.fft.rfftn(delta)

    def response(field, where):
        """<F delta*> / <|delta|^2> over the low-k modes of a mu^2 range."""
        f_k = np.fft.rfftn(field)
        sel = low & where
        return np.real(np.sum(f_k[sel] * np.conj(delta_k[sel]))) / np.sum(np.abs(delta_k[sel]) ** 2)

    along, across = mu2 > 0.7, mu2 < 0.3
    for j, b in enumerate(BIASES[:2]):
        observed = np.asarray(box[f"halos_s_{j}"].value, np.float64)
        assert response(observed, along) / response(observed, across) > 1 + 0.5 * growth_rate() / b
        assert response(moved[j], along) / response(moved[j], across) == pytest.approx(1.0, abs=0.1)
        assert response(moved[j], across) == pytest.approx(0.25 * b, rel=0.15)
        assert moved[j].sum() == pytest.approx(observed.sum(), rel=1e-6)


def test_the_filter_with_the_reconstruction_round_trips_and_reads_the_old_files(tmp_path):
    rec = Reconstruction(2.0, 8.0, LOS)
    train = [synthetic_box(1, noise=0.5), synthetic_box(2, noise=0.5)]
    fitted = HaloFilter.fit(train, los="z", log_radii=(8.0,), reconstruction=rec)
    plain = HaloFilter.fit(train, los="z", log_radii=(8.0,))
    assert fitted.weights["velocity"].shape[1] == 2 * plain.weights["velocity"].shape[1]
    again = HaloFilter.load(fitted.save(tmp_path / "filter.json"))
    assert again.reconstruction == rec
    box = synthetic_box(3, noise=0.5)
    np.testing.assert_array_equal(again.predict(box)["velocity"].value, fitted.predict(box)["velocity"].value)
    assert "reconstruction" in fitted.predict(box)["density"].attrs["method"]
    old = HaloFilter.load(plain.save(tmp_path / "plain.json"))  # files without the reconstruction still load
    assert old.reconstruction is None
    extra = {**box, "halos_s_4": box["halos_s_0"].with_value(box["halos_s_0"].value, "halos_s_4")}
    np.testing.assert_array_equal(fitted.predict(extra)["velocity"].value, fitted.predict(box)["velocity"].value)
    mixed = fitted.to_dict()
    mixed["reconstruction"]["los"] = "x"
    from velnet.errors import VelnetInputError

    with pytest.raises(VelnetInputError, match="mixed.json.*line of sight"):
        HaloFilter.from_dict(mixed, "mixed.json")
    with pytest.raises(VelnetInputError, match="line of sight"):
        HaloFilter.fit(train, los="z", reconstruction=Reconstruction(2.0, 8.0, 0))


def test_velnet_baseline_fits_the_filter_with_or_without_the_moved_channels(tmp_path):
    from velnet.cli import main as velnet
    from velnet.fields.field import save_fields

    files = []
    for seed in (1, 2):
        box = synthetic_box(seed)
        files.append(save_fields(tmp_path / f"box{seed}.h5", list(box.values()), {"los": "z", "beta": 2.0}))
    for radius, moved in (([], True), (["--moved-smoothing", "0"], False)):
        out = tmp_path / f"filter{len(radius)}.json"
        assert velnet(["baseline", *map(str, files), "--task", "halo-velocity", *radius, "--out", str(out)]) == 0
        fitted = HaloFilter.load(out)
        assert (fitted.reconstruction is not None) == moved
    assert fitted.reconstruction is None
    assert HaloFilter.load(tmp_path / "filter0.json").reconstruction.smoothing == 4.0
    assert HaloFilter.load(tmp_path / "filter0.json").log_radii == (2.0, 4.0)
    for flags, radii in ((["--log-radii", "3"], (3.0,)), (["--log-radii"], ())):
        assert velnet(["baseline", *map(str, files), "--task", "halo-velocity", *flags, "--out",
                       str(tmp_path / "logs.json")]) == 0
        assert HaloFilter.load(tmp_path / "logs.json").log_radii == radii
    bare = save_fields(tmp_path / "nobeta.h5", list(synthetic_box(3).values()), {"los": "z"})
    assert velnet(["baseline", str(files[0]), str(bare), "--task", "halo-velocity", "--out",
                   str(tmp_path / "never.json")]) != 0
    assert not (tmp_path / "never.json").exists()
    for method in ("reconstruction", "estimator"):
        for flag in (["--moved-smoothing", "4"], ["--log-radii", "2"]):
            assert velnet(["baseline", *map(str, files), "--task", "halo-velocity", "--method", method,
                           *flag, "--out", str(tmp_path / "never.json")]) != 0
    assert velnet(["baseline", *map(str, files), "--task", "halo-velocity", "--log-radii", "-2",
                   "--out", str(tmp_path / "never.json")]) != 0
    assert velnet(["baseline", *map(str, files), "--task", "halo-velocity", "--moved-smoothing", "-1",
                   "--out", str(tmp_path / "never.json")]) != 0
    assert not (tmp_path / "never.json").exists()
