"""The fault suite, property tests: the snapshot readers and the fields loader over random corruptions.

Truncations, byte flips, wrong dtypes and shapes, absurd attributes: whatever the damage, a
reader returns finite particles in the box or raises VelnetInputError; `load_fields` returns
finite fields of the file's mesh or raises VelnetInputError; and the commands that read such a
file exit 0 with a finite output, or 2 with none, never with a traceback. Examples are drawn
deterministically (`derandomize`), so a failure reproduces.
"""
import contextlib
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_readers import MISSING, write_gadget, write_hdf5

from velnet.cli import main
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, load_fields, save_fields
from velnet.physics.cosmology import WU2021
from velnet.shipped import model_path

SHIPPED = model_path()  # velnet's default, the shipped classical estimator

pytest.importorskip("nbodykit")

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
COMMANDS = settings(PROPERTY, max_examples=10)
BOX, NMESH = 16.0, 8
"""A fields file of 2 Mpc/h cells, what the shipped classical estimator takes."""


def run(*argv):
    return main([str(a) for a in argv])


def snapshot(folder, kind):
    """A valid 200-particle Gadget-1 or HDF5 snapshot in `folder`."""
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 50.0, (200, 3)).astype(np.float32)
    vel = rng.normal(0, 300, (200, 3)).astype(np.float32)
    ids = np.arange(200, dtype=np.uint32)
    write = write_gadget if kind == "gadget" else write_hdf5
    return write(folder / ("snap_000" if kind == "gadget" else "snap_000.hdf5"), pos, vel, ids)


def fields_file(path):
    """A valid fields file: density (mean 1) and velocity of an 8^3 box of 16 Mpc/h."""
    rng = np.random.default_rng(1)
    density = np.exp(0.5 * rng.standard_normal((NMESH,) * 3)).astype(np.float32)
    velocity = rng.normal(0, 300, (NMESH,) * 3 + (3,)).astype(np.float32)
    return save_fields(path, [Field(density, "density", BOX, 0.0, WU2021),
                              Field(velocity, "velocity", BOX, 0.0, WU2021)])


BYTE_DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)),
                                        min_size=1, max_size=8)))
"""Damage to a file's bytes: cut at a fraction of its length, or bytes at fractions xor-ed with values."""


def damage_bytes(path, damage):
    data = bytearray(path.read_bytes())
    kind, how = damage
    if kind == "truncate":
        data = data[:int(how * len(data))]
    else:
        for where, value in how:
            data[int(where * len(data))] ^= value
    path.write_bytes(bytes(data))


ABSURD = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                   st.text(max_size=8), st.just('{"Omega_m": 0.3'), st.just("[1, 2]"),
                   st.just(json.dumps({"Omega_m": -1, "Omega_b": 0, "h": 0.7, "sigma8": 0.8, "n_s": 1})))
DATASET_DAMAGE = st.one_of(
    st.tuples(st.just("attribute"), st.sampled_from(["box_size", "nmesh", "redshift", "cosmology"]), ABSURD),
    st.tuples(st.just("delete attribute"), st.sampled_from(["box_size", "nmesh", "redshift", "cosmology"]),
              st.none()),
    st.tuples(st.just("dtype"), st.sampled_from(["density", "velocity"]),
              st.sampled_from(["i1", "u8", "f2", "f8", "c8", "?", "S4"])),
    st.tuples(st.just("shape"), st.sampled_from(["density", "velocity"]),
              st.lists(st.integers(1, 9), min_size=0, max_size=5).map(tuple)),
    st.tuples(st.just("value"), st.sampled_from(["density", "velocity"]),
              st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e38, 3e5])),
)
"""Damage to a fields file's content: absurd or missing metadata, other dtypes, shapes and values."""


def damage_fields(path, damage):
    kind, name, how = damage
    with h5py.File(path, "r+") as h5:
        if kind == "attribute":
            h5.attrs[name] = how
        elif kind == "delete attribute":
            del h5.attrs[name]
        else:
            value = h5[name][...]
            del h5[name]
            if kind == "dtype":
                h5[name] = value.astype("S4") if how == "S4" else value.astype(how)
            elif kind == "shape":
                h5[name] = np.ones(how, np.float32)
            else:
                value.reshape(-1)[5] = how
                h5[name] = value


@contextlib.contextmanager
def damaged(write, damage):
    """A temporary folder and the file `write(folder)` makes in it, damaged: `(folder, path)`."""
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder))
        (damage_bytes if damage[0] in ("truncate", "flip") else damage_fields)(path, damage)
        yield Path(folder), path


def check_loaded(path):
    """`load_fields` gives finite fields of the file's mesh, of their kinds, or VelnetInputError."""
    try:
        fields = load_fields(path)
    except VelnetInputError as err:
        assert err.path == str(path)
        return
    for name, field in fields.items():
        assert np.all(np.isfinite(field.value)) and field.nmesh > 0 and field.box_size > 0
        assert field.value.ndim == (4 if name in ("velocity", "momentum") else 3)


def check_prediction(path, out):
    """`velnet predict` of a damaged file: exit 0 and a finite output, or exit 2 and none."""
    code = run("predict", path, SHIPPED, "--out", out)
    assert code in (0, 2)
    if code == 0:
        assert all(np.all(np.isfinite(f.value)) for f in load_fields(out).values())
    else:
        assert not out.exists() and not out.with_suffix(".json").exists()


@PROPERTY
@given(kind=st.sampled_from(["gadget", "hdf5"]), damage=BYTE_DAMAGE)
def test_a_damaged_snapshot_reads_whole_or_not_at_all(kind, damage):
    from data_prep.readers import read_particles

    with damaged(lambda folder: snapshot(folder, kind), damage) as (_, path):
        try:
            particles = read_particles(path, cosmology=MISSING)
        except VelnetInputError as err:
            assert err.path is not None
            return
        assert np.all(np.isfinite(particles.position)) and np.all(np.isfinite(particles.velocity))
        assert np.all((particles.position >= 0) & (particles.position < particles.box_size))


@COMMANDS
@given(kind=st.sampled_from(["gadget", "hdf5"]), damage=BYTE_DAMAGE)
def test_paint_of_a_damaged_snapshot_writes_a_finite_file_or_nothing(kind, damage):
    with damaged(lambda folder: snapshot(folder, kind), damage) as (folder, path):
        out = folder / "out" / "fields.h5"
        code = run("paint", path, "--nmesh", 8, "--cosmology", json.dumps(MISSING), "--out", out)
        assert code in (0, 2)
        if code == 0:
            check_loaded(out)
            assert set(load_fields(out)) == {"density", "momentum", "velocity"}
        else:
            assert not out.parent.exists() or list(out.parent.iterdir()) == []


@PROPERTY
@given(damage=st.one_of(BYTE_DAMAGE, DATASET_DAMAGE))
def test_a_damaged_fields_file_loads_finite_or_not_at_all(damage):
    with damaged(lambda folder: fields_file(folder / "box.h5"), damage) as (_, path):
        check_loaded(path)


@COMMANDS
@given(damage=st.one_of(BYTE_DAMAGE, DATASET_DAMAGE))
def test_commands_on_a_damaged_fields_file_exit_0_with_finite_output_or_2_with_none(damage):
    with damaged(lambda folder: fields_file(folder / "box.h5"), damage) as (folder, path):
        assert run("summary", path) in (0, 2)
        check_prediction(path, folder / "pred.h5")
