"""A cache of simulated boxes and halo catalogues, keyed by what made them.

A box costs minutes to hours of CPU; the same configuration gives the same box, so a rerun on
the same machine (another experiment, a resumed one, the route study and the training run that
share a box) takes it from here. Layout, under `$VELNET_CACHE` (default
`~/.cache/velnet/boxes`):

    sims/<key>/          a `velnet simulate` output folder (snapshots + config.json); key: the
                         `SimulationConfig` as canonical JSON
    halos/<key>.h5       a FOF catalogue; key: the snapshot's own key and the FOF settings (and
                         the subhalo model, its parameters and seed, where satellites were drawn)

Entries appear whole or not at all (the simulation and FOF writers are atomic), and a
simulation's entry counts only once its `config.json` is written, which happens last.
"""
import hashlib
import json
import os
from pathlib import Path

from velnet.errors import VelnetInputError

CACHE_VERSION = 1
"""Bumped when what a key stands for changes, so old entries are no longer found."""


def cache_root():
    """The cache folder: `$VELNET_CACHE`, or `~/.cache/velnet/boxes`."""
    return Path(os.environ.get("VELNET_CACHE") or Path.home() / ".cache" / "velnet" / "boxes")


def key_of(obj):
    """A 16-hex-digit key of a JSON-ready object (its canonical JSON's sha256, with the cache version)."""
    text = json.dumps({"cache_version": CACHE_VERSION, "what": obj}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def simulation_folder(config):
    """The cache folder of a `SimulationConfig` (made or not)."""
    return cache_root() / "sims" / key_of(config.to_dict())


def is_complete_simulation(folder):
    """Whether a simulation folder holds its `config.json` (written after every snapshot)."""
    return (Path(folder) / "config.json").is_file()


def snapshot_key(snapshot):
    """What identifies a snapshot for the halo cache: its simulation's config and its name, or,
    for a snapshot velnet did not simulate, its resolved path, size and modification time."""
    snapshot = Path(snapshot)
    record = snapshot.parent / "config.json"
    if record.is_file():
        try:
            config = json.loads(record.read_text())["config"]
        except (ValueError, KeyError):
            config = None
        if config is not None:
            return {"simulation": config, "snapshot": snapshot.name}
    stat = snapshot.stat()
    return {"path": str(snapshot.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def halos_file(snapshot, linking_length, nmin, subhalos=None, subhalo_seed=0):
    """The cache file of the FOF catalogue of a snapshot with these settings (made or not); with a
    subhalo model (`data_prep.subhalos.MODELS`), of the hosts and the satellites drawn with that seed."""
    key = {"snapshot": snapshot_key(snapshot), "finder": "nbodykit FOF", "linking_length": float(linking_length),
           "nmin": int(nmin)}
    if subhalos is not None:
        from .subhalos import PARAMETERS

        key.update(subhalos=subhalos, subhalo_seed=int(subhalo_seed), subhalo_parameters=PARAMETERS)
    return cache_root() / "halos" / (key_of(key) + ".h5")


def link_output(out, target):
    """Make `out` a symbolic link to the cache entry `target` (nothing to do where it is one already).

    Raises:
        VelnetInputError: `out` exists and is something else (it is never replaced).
    """
    out, target = Path(out), Path(target)
    if out.is_symlink() and out.resolve() == target.resolve():
        return out
    if out.exists() or out.is_symlink():
        raise VelnetInputError(out, f"exists and is not a link to the cached {target}; choose another --out "
                                    "or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.symlink_to(target.resolve(), target_is_directory=target.is_dir())
    return out
