"""A shard dataset's `manifest.json`: what its tiles hold, where they came from, which files hold them.

A dataset folder holds `{split}-{i:05d}-of-{n:05d}.tfrecord` shards (`velnet.data.records`)
and `manifest.json`, whose keys are the fields of `Manifest`: format, version, task,
cosmology, box_size (Mpc/h), nmesh, redshift, input_name, target_name, input_shape,
target_shape, input_vector_slices, target_vector_slices, input_spec, tile {input, target,
margin}, normalisation {input_transform, target_scale, target_units, undo}, split {mode,
rule, fractions, seed, counts, per_box}, shards [{file, split, count, sha256}], provenance
{sources [{file, sha256}], config, versions, date}. Manifests written before tasks and input
specs existed are wu2021 datasets of ln(1 + rho/rho_mean) alone.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from velnet.data.inputs import SPEC_KEY, InputSpec
from velnet.data.tiling import SPLITS
from velnet.data.writer import sha256
from velnet.errors import VelnetInputError
from velnet.files import require_file
from velnet.tasks import LEGACY_TASK, TileData, get_task

FORMAT = "velnet-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_KEYS = (
    "format", "version", "cosmology", "box_size", "nmesh", "redshift", "input_name",
    "target_name", "input_shape", "target_shape", "input_vector_slices",
    "target_vector_slices", "tile", "normalisation", "split", "shards", "provenance")
"""Keys every manifest holds (task and input_spec have defaults)."""


@dataclass(frozen=True, kw_only=True)
class Manifest(TileData):
    """A shard dataset's `manifest.json`, parsed and checked once (`read_manifest`).

    Attributes: those of `TileData` (task, shapes, input spec, tile, normalisation, the
    boxes' metadata) and format, version, split, shards, provenance (see the module
    docstring); `folder` is the dataset folder (not stored).
    """

    format: str
    version: int
    split: dict
    shards: list
    provenance: dict
    folder: Path = field(default=None, compare=False)

    @property
    def path(self):
        """The manifest file."""
        return Path(self.folder) / MANIFEST

    def to_dict(self):
        """The JSON object of `manifest.json`."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "folder"}
        out[SPEC_KEY] = self.input_spec.to_dict()
        return out

    @classmethod
    def from_dict(cls, manifest, folder):
        """Check a manifest's JSON object and type it.

        Raises:
            VelnetInputError: naming the manifest file: missing keys, another format
                version, an unknown task or input spec, or inconsistent counts.
        """
        path = Path(folder) / MANIFEST
        if not isinstance(manifest, dict):
            raise VelnetInputError(path, "must hold a JSON object")
        missing = [k for k in MANIFEST_KEYS if k not in manifest]
        if missing:
            raise VelnetInputError(path, f"lacks keys {missing}")
        if manifest["format"] != FORMAT or manifest["version"] != FORMAT_VERSION:
            raise VelnetInputError(
                path, f"is {manifest['format']!r} version {manifest['version']}; this velnet reads "
                      f"{FORMAT!r} version {FORMAT_VERSION}")
        for key, sub in (("tile", ("input", "target", "margin")),
                         ("normalisation", ("input_transform", "target_scale")),
                         ("split", ("counts",))):
            lacking = [s for s in sub if s not in manifest[key]]
            if lacking:
                raise VelnetInputError(path, f"{key!r} lacks keys {lacking}")
        for shard in manifest["shards"]:
            lacking = [k for k in ("file", "split", "count", "sha256") if k not in shard]
            if lacking:
                raise VelnetInputError(path, f"shard entry {shard} lacks keys {lacking}")
        for split in SPLITS:
            total = sum(s["count"] for s in manifest["shards"] if s["split"] == split)
            if total != manifest["split"]["counts"].get(split, 0):
                raise VelnetInputError(
                    path, f"shards of {split!r} hold {total} records, split counts say "
                          f"{manifest['split']['counts'].get(split, 0)}")
        unknown = sorted(set(manifest) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise VelnetInputError(path, f"has unknown keys {unknown}")
        get_task(manifest.get("task", LEGACY_TASK), path)
        return cls(**{**manifest, SPEC_KEY: InputSpec.from_dict(manifest, path), "folder": Path(folder)})


def read_manifest(dataset_dir, verify=False):
    """Read and check a dataset's `manifest.json`, and that its shards are there.

    Args:
        dataset_dir: the dataset folder.
        verify: also check every shard's sha256 (reads all shards).

    Returns:
        The `Manifest`.

    Raises:
        VelnetInputError: missing or unreadable manifest, a malformed one (see
            `Manifest.from_dict`), missing shard files or (with `verify`) a checksum mismatch.
    """
    path = require_file(Path(dataset_dir) / MANIFEST, "dataset manifest")
    try:
        stored = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise VelnetInputError(path, f"not valid JSON ({err})") from None
    manifest = Manifest.from_dict(stored, dataset_dir)
    for shard in manifest.shards:
        shard_path = require_file(Path(dataset_dir) / shard["file"], "shard listed in the manifest")
        if verify and sha256(shard_path) != shard["sha256"]:
            raise VelnetInputError(shard_path, "sha256 differs from the manifest: the shard changed or is damaged")
    return manifest


def split_files(manifest, split):
    """Paths of the shards of one split, in name order.

    Raises:
        VelnetInputError: unknown split or no records in it.
    """
    if split not in SPLITS:
        raise VelnetInputError(manifest.folder, f"split must be one of {SPLITS}. Received: split={split!r}")
    files = [Path(manifest.folder) / s["file"] for s in manifest.shards if s["split"] == split and s["count"]]
    if not files:
        raise VelnetInputError(manifest.folder, f"dataset has no {split!r} tiles")
    return files
