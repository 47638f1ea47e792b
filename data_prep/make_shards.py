"""Fields files -> tiles -> TFRecord shards plus manifest: the training set of Wu et al. 2021.

Input is ln(1 + rho/rho_mean) in `target + 2 * margin` cubes (32^3 by default), target the
velocity or momentum in `target^3` cubes (20^3) centred in them. Targets are stored divided
by their rms over the training tiles (km/s), recorded in the manifest. With `linear_input`
the inputs carry three more channels, the linear-theory target computed from the whole box
(see `velnet.inputs`), in the same normalised units as the targets; with `context` a last
channel holds a coarse, larger window of the density around each tile.
"""
import datetime
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from velnet.classical import ClassicalEstimator
from velnet.errors import VelnetInputError
from velnet.fields import load_fields, read_meta
from velnet.files import atomic_dir
from velnet.provenance import versions
from velnet.inputs import (SPEC_KEY, InputWindows, box_inputs, check_context, input_layout, input_spec,
                           read_spec)
from velnet.shards import (FORMAT, FORMAT_VERSION, MANIFEST, ShardWriter, encode_record,
                           read_manifest, read_split_arrays, sha256, shard_name)
from velnet.tiling import SPLITS, check_grid, extract, split_tiles, tile_origins

TARGETS = ("velocity", "momentum")
REGION_RULE = ("x-slabs one target tile thick dealt to contiguous regions train, val, test "
               "(periodic in x); ceil(2 margin / target) guard slabs dropped at each border "
               "of the training region, so no held-out input window overlaps a training one")
CHUNK = 64
"""Tiles cut and encoded at a time (bounds the memory used)."""


def make_shards(field_files, outdir, target="velocity", tile=20, margin=6, subfield=None, split="region",
                fractions=(0.6, 0.3, 0.1), tiles_per_shard=256, overwrite=False,
                target_scale=None, seed=0, linear_input=False, smoothing=0.0, context=0, base=None):
    """Write the tiles of fields files as TFRecord shards with a manifest, atomically.

    Args:
        field_files: fields files (one box each, from `velnet.fields.save_fields`) holding
            "density" and the target field; all must share box size, mesh, redshift and
            cosmology.
        outdir: dataset folder to create.
        target: "velocity" or "momentum".
        tile: cells per side of a target tile; must divide the mesh (or the subfield).
        margin: input cells added on each side of a tile.
        subfield: tile only the centred `subfield^3` of the mesh (`velnet.tiling.subfield_offset`;
            Wu et al. 2021: 240 of 256, 1728 targets of 20^3 a box); None: the whole mesh.
        split: "region" (each box split spatially, see `velnet.tiling.split_tiles`) or
            "train", "val", "test" (whole boxes in that split).
        fractions: train, val, test shares of each box for `split="region"`.
        tiles_per_shard: records per shard file.
        overwrite: replace an existing different dataset in `outdir`.
        target_scale: km/s to divide targets by; default the power of two nearest the rms of
            the training targets, so that dividing and multiplying back are exact and the
            stored tiles stitch back into the fields bit for bit (needed when there are no
            training tiles: pass the training set's scale).
        seed: seed of the order of tiles across shards.
        linear_input: add the linear-theory target, computed from each whole box and
            divided by the target scale, as input channels 1-3 (`velnet.inputs`).
        smoothing: Gaussian radius of that linear theory, Mpc/h (0: none).
        base: a fitted `velnet.classical.ClassicalEstimator` whose velocity replaces linear
            theory in those channels (needs `linear_input`, no smoothing).
        context: coarsening factor of a context-window channel (0: none; see
            `velnet.inputs.InputWindows`); it must divide the mesh.

    Returns:
        The manifest dict (also written to `outdir/manifest.json`). If `outdir` already
        holds the same dataset (same config and source checksums), it is left as it is.

    Raises:
        VelnetInputError: inconsistent or bad fields files, bad settings, or `outdir`
            holding another dataset while `overwrite` is False.
    """
    field_files = [Path(f).resolve() for f in field_files]
    outdir = Path(outdir)
    if not field_files:
        raise VelnetInputError(None, "no fields files given")
    if target not in TARGETS:
        raise VelnetInputError(None, f"target must be one of {TARGETS}. Received: target={target!r}")
    if tiles_per_shard < 1:
        raise VelnetInputError(None, f"tiles_per_shard must be >= 1. Received: tiles_per_shard={tiles_per_shard}")
    spec = input_spec(linear_input, smoothing, context, base)
    meta = _common_meta(field_files)
    nmesh = meta["nmesh"]
    box_splits = [split] * len(field_files) if isinstance(split, str) else list(split)
    if len(box_splits) != len(field_files):
        raise VelnetInputError(None, f"{len(box_splits)} splits for {len(field_files)} fields files; "
                                     f"give one split, or one per file. Received: split={split}")
    try:
        check_grid(nmesh, tile, subfield)
        check_context(nmesh, spec.get("context", 0))
        origins = tile_origins(nmesh, tile, subfield)
        per_box = [split_tiles(origins, nmesh, tile, margin, s, fractions, subfield) for s in box_splits]
    except VelnetInputError as err:
        raise VelnetInputError(field_files[0], err.problem) from None
    labels = [box_labels for box_labels, _ in per_box]
    counts = [box_counts for _, box_counts in per_box]
    totals = {k: sum(c[k] for c in counts) for k in counts[0]}

    config = {"target": target, "tile": tile, "margin": margin, "split": box_splits,
              "fractions": list(fractions), "tiles_per_shard": tiles_per_shard,
              "target_scale": target_scale, "seed": seed}
    if spec != input_spec():  # only then, so datasets made before the option still match their config
        config[SPEC_KEY] = spec
    if subfield is not None:
        config["subfield"] = subfield
    sources = [{"file": str(f), "sha256": sha256(f)} for f in field_files]
    existing = _existing(outdir, config, sources, overwrite)
    if existing is not None:
        return existing

    scale = float(target_scale) if target_scale else nearest_power_of_two(
        _rms(field_files, target, origins, labels, tile))
    nshards = {s: -(-totals[s] // tiles_per_shard) for s in SPLITS}
    rng = {s: np.random.default_rng([seed, i]) for i, s in enumerate(SPLITS)}
    positions = {s: rng[s].permutation(totals[s]) for s in SPLITS}
    with atomic_dir(outdir) as tmp, tqdm(total=sum(totals[s] for s in SPLITS), desc="tiles",
                                          unit="tile") as bar:
        writer = ShardWriter(tmp)
        first = {s: 0 for s in SPLITS}
        for box, path in enumerate(field_files):
            fields = load_fields(path, ["density", target])
            windows = InputWindows(box_inputs(fields["density"], spec, target, scale),
                                   fields["density"].value, spec)
            y = fields[target].value
            for s in SPLITS:
                kept = np.flatnonzero(labels[box] == s)
                pos = positions[s][first[s]:first[s] + len(kept)]
                first[s] += len(kept)
                kept, pos = kept[np.argsort(pos)], np.sort(pos)
                for start in range(0, len(kept), CHUNK):
                    chunk, where = kept[start:start + CHUNK], pos[start:start + CHUNK]
                    xs = windows(origins[chunk], tile + 2 * margin, margin)
                    ys = normalised(extract(y, origins[chunk], tile), scale)
                    shard = where // tiles_per_shard
                    for i in np.unique(shard):
                        writer.append(shard_name(s, i, nshards[s]),
                                      [encode_record(xs[j], ys[j], origins[chunk[j]], box)
                                       for j in np.flatnonzero(shard == i)])
                    bar.update(len(chunk))
        manifest = _manifest(meta, config, spec, sources, scale, totals, counts, writer.entries(),
                             target)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        read_manifest(tmp)
    return manifest


def _common_meta(field_files):
    """Metadata shared by all fields files; VelnetInputError naming the first that differs."""
    meta = read_meta(field_files[0])
    for path in field_files[1:]:
        other = read_meta(path)
        for key in ("box_size", "nmesh", "redshift"):
            if not np.isclose(other[key], meta[key], rtol=1e-9, atol=1e-12):
                raise VelnetInputError(path, f"{key} is {other[key]}, but {field_files[0]} has {meta[key]}")
        if other["cosmology"] != meta["cosmology"]:
            raise VelnetInputError(
                path, f"cosmology {other['cosmology']} differs from {meta['cosmology']} of {field_files[0]}")
    return meta


def _existing(outdir, config, sources, overwrite):
    """The manifest of `outdir` if it already holds this dataset; None if it is to be written."""
    if overwrite or not outdir.exists() or not any(outdir.iterdir()):
        return None
    try:
        manifest = read_manifest(outdir)
    except VelnetInputError as err:
        raise VelnetInputError(outdir, f"exists and is not a velnet dataset ({err.problem}); "
                                       f"pass overwrite=True to replace it") from None
    if manifest["provenance"].get("config") == config and manifest["provenance"].get("sources") == sources:
        return manifest
    raise VelnetInputError(outdir, "holds a different dataset (other config or source fields); "
                                   "pass overwrite=True to replace it")


def normalised(target, scale):
    """Targets as stored: float32 of target / scale (exact when scale is a power of two)."""
    return (target.astype(np.float64) / scale).astype(np.float32)


def nearest_power_of_two(x):
    """2**round(log2(x)): a scale by which float division and multiplication are exact."""
    return float(2.0 ** np.round(np.log2(x)))


def _rms(field_files, target, origins, labels, tile):
    """Root mean square of the target components over the training tiles of all boxes, km/s."""
    total, cells = 0.0, 0
    for path, box_labels in zip(field_files, labels):
        train = origins[box_labels == "train"]
        if len(train):
            value = extract(load_fields(path, [target])[target].value, train, tile)
            total += float(np.sum(value.astype(np.float64) ** 2))
            cells += value.size
    if not cells:
        raise VelnetInputError(field_files[0], "no training tiles to take the target scale from; "
                                               "pass target_scale (from the training dataset's manifest)")
    if total == 0:
        raise VelnetInputError(field_files[0], f"{target} is zero on every training tile")
    return float(np.sqrt(total / cells))


def _manifest(meta, config, spec, sources, scale, totals, counts, shards, target):
    tile, margin = config["tile"], config["margin"]
    size = tile + 2 * margin
    channels, vector_slices = input_layout(spec)
    transform = "ln(1 + rho/rho_mean)"
    if spec["linear"]:
        origin = (f"classical estimator ({ClassicalEstimator.from_dict(spec['base']).label}, per-k weights)"
                  if spec.get("base") else f"linear theory (Gaussian R = {spec['smoothing']:g} Mpc/h)")
        transform = f"channel 0: {transform}; channels 1-3: {target} of the whole box from {origin} / target_scale"
    if spec.get("context"):
        transform += (f"; channel {channels - 1}: ln(1 + rho/rho_mean) of {spec['context']}^3-cell "
                      f"blocks in a {size}^3-block window with the same centre")
    return {
        "format": FORMAT, "version": FORMAT_VERSION,
        "cosmology": meta["cosmology"], "box_size": meta["box_size"], "nmesh": meta["nmesh"],
        "redshift": meta["redshift"],
        "input_name": "ln_density", "target_name": target,
        "input_shape": [size, size, size, channels], "target_shape": [tile, tile, tile, 3],
        "input_vector_slices": vector_slices, "target_vector_slices": [[0, 3]],
        SPEC_KEY: spec,
        "tile": {"input": size, "target": tile, "margin": margin,
                 **({"subfield": config["subfield"]} if "subfield" in config else {})},
        "normalisation": {
            "input_transform": transform, "target_scale": scale, "target_units": "km/s",
            "undo": f"{target} [km/s] = stored target * target_scale"},
        "split": {"mode": config["split"],
                  "rule": _split_rule(config["split"]),
                  "fractions": config["fractions"], "seed": config["seed"],
                  "counts": totals, "per_box": counts},
        "shards": shards,
        "provenance": {
            "sources": sources, "config": config,
            "versions": versions(("velnet", "numpy", "h5py", "google-crc32c")),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }


def _split_rule(box_splits):
    """How the tiles of each box were split, in words."""
    rules = [REGION_RULE] if "region" in box_splits else []
    whole = sorted(set(box_splits) - {"region"})
    if whole:
        rules.append("whole boxes: " + ", ".join(f"box {i} in {s!r}" for i, s in enumerate(box_splits)
                                                 if s != "region"))
    return "; ".join(rules)



def verify_shards(dataset_dir):
    """Check a dataset against the fields files it was made from, tile by tile, exactly.

    Verifies every shard's sha256, then that each stored input window equals the periodic
    window of the source box's network inputs and each stored target equals the source
    field's normalised window, bit for bit.

    Returns:
        dict split -> number of tiles checked.

    Raises:
        VelnetInputError: a checksum, a tile or a source file does not match.
    """
    manifest = read_manifest(dataset_dir, verify=True)
    sources = [Path(s["file"]) for s in manifest["provenance"]["sources"]]
    for source in manifest["provenance"]["sources"]:
        if sha256(source["file"]) != source["sha256"]:
            raise VelnetInputError(source["file"], "changed since the dataset was made (sha256 differs)")
    tile, margin = manifest["tile"]["target"], manifest["tile"]["margin"]
    scale, target = manifest["normalisation"]["target_scale"], manifest["target_name"]
    spec = read_spec(manifest, dataset_dir)
    checked = {}
    for split in SPLITS:
        if not manifest["split"]["counts"][split]:
            continue
        x, y, origins, boxes = read_split_arrays(dataset_dir, split)
        for box in np.unique(boxes):
            fields = load_fields(sources[box], ["density", target])
            windows = InputWindows(box_inputs(fields["density"], spec, target, scale),
                                   fields["density"].value, spec)
            sel = boxes == box
            if not (np.array_equal(x[sel], windows(origins[sel], tile + 2 * margin, margin))
                    and np.array_equal(y[sel], normalised(extract(fields[target].value, origins[sel], tile), scale))):
                raise VelnetInputError(dataset_dir, f"{split!r} tiles of box {box} ({sources[box]}) "
                                                    "differ from that fields file")
        checked[split] = len(x)
    return checked
