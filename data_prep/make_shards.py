"""Fields files -> tiles -> TFRecord shards plus manifest: the training set of any task.

The inputs are the task's channels (`velnet.data.inputs.InputSpec`) of each whole box, cut into
`target + 2 * margin` cubes around the `target^3` cubes of the target field: for Wu et al.
2021 ln(1 + rho/rho_mean) in 32^3 cubes around 20^3 velocity or momentum targets (with
`linear` the linear-theory target of the whole box, with `context` a coarse, larger window);
for the 2024 halo paper the halo channels (and stage one's predicted density and the linear
velocity of eq. 2-3) in sub-boxes of the density, velocity or momentum, without margins,
since its networks pad periodically. Targets are stored divided by the power of two
nearest their rms (or standard deviation: the target's `normalisation`) over the training
tiles, input fields by the power of two nearest the rms of their sum's fluctuation there;
both scales are in the manifest.

Preparing data reads files only: a channel predicted by a model (stage one's density) is a
field of each box's predictions file (`velnet predict`), given beside the fields files.
"""
import dataclasses
import datetime
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from velnet.data.boxes import check_predictions, load_box, predicted_names
from velnet.data.datasets import read_split_arrays
from velnet.data.inputs import DENSITY_FIELD, PREDICTED, PREDICTED_DENSITY, SPEC_KEY, box_inputs
from velnet.data.manifest import FORMAT, FORMAT_VERSION, MANIFEST, Manifest, read_manifest
from velnet.data.records import encode_record, shard_name
from velnet.data.tiling import SPLITS, check_grid, extract, split_tiles, tile_origins
from velnet.data.windows import InputWindows, check_context
from velnet.data.writer import ShardWriter, sha256
from velnet.errors import VelnetInputError
from velnet.fields.field import field_names, load_fields, read_meta
from velnet.files import OVERWRITE_HINT, atomic_dir, open_h5, require_file
from velnet.provenance import versions
from velnet.tasks import DEFAULT_TASK, LEGACY_TASK, get_target, get_task

REGION_RULE = ("x-slabs one target tile thick dealt to contiguous regions train, val, test "
               "(periodic in x); ceil(2 margin / target) guard slabs dropped at each border "
               "of the training region, so no held-out input window overlaps a training one")
CHUNK = 64
"""Tiles cut and encoded at a time (bounds the memory used)."""


def make_shards(field_files, outdir, task=DEFAULT_TASK, target=None, tile=None, margin=None, subfield=None,
                split="region", fractions=(0.6, 0.3, 0.1), tiles_per_shard=256, overwrite=False,
                target_scale=None, seed=0, inputs=None, predictions=None):
    """Write the tiles of fields files as TFRecord shards with a manifest, atomically.

    Args:
        field_files: fields files (one box each, from `velnet.fields.field.save_fields`) holding
            the fields the inputs read and the target field; all must share box size, mesh,
            redshift and cosmology.
        outdir: dataset folder to create.
        task: a `velnet.tasks.TASKS` name (or `Task`).
        target: the target field (default the task's first).
        tile: cells per side of a target tile (default the task's); must divide the mesh
            (or the subfield).
        margin: input cells added on each side of a tile (default the task's; 0 for the
            periodic networks).
        subfield: tile only the centred `subfield^3` of the mesh (`velnet.data.tiling.subfield_offset`;
            Wu et al. 2021: 240 of 256, 1728 targets of 20^3 a box); None: the whole mesh.
        split: "region" (each box split spatially, see `velnet.data.tiling.split_tiles`) or
            "train", "val", "test" (whole boxes in that split).
        fractions: train, val, test shares of each box for `split="region"`.
        tiles_per_shard: records per shard file.
        overwrite: replace an existing different dataset in `outdir`.
        target_scale: target units to divide targets by; default the power of two nearest
            the rms of the training targets, so that dividing and multiplying back are exact
            and the stored tiles stitch back into the fields bit for bit (needed when there
            are no training tiles: pass the training set's scale; and a field_scale in
            `inputs`, for input fields).
        seed: seed of the order of tiles across shards.
        inputs: the `InputSpec` of the input channels (default: the task's, from the
            fields of the first file); a None field_scale is set from the training tiles.
        predictions: None, or one predictions file per fields file (`velnet predict` of a
            model on that box), whose fields join the box prefixed "predicted_"
            (`velnet.data.boxes.load_box`): stage one's density for the halo-velocity task.

    Returns:
        The `Manifest` (also written to `outdir/manifest.json`). If `outdir` already holds
        the same dataset (same config and source checksums), it is left as it is.

    Raises:
        VelnetInputError: inconsistent or bad fields files, bad settings, or `outdir`
            holding another dataset while `overwrite` is False.
    """
    field_files = [Path(f).resolve() for f in field_files]
    outdir = Path(outdir)
    if not field_files:
        raise VelnetInputError(None, "no fields files given")
    predictions = _predictions(field_files, predictions)
    task = get_task(task) if isinstance(task, str) else task
    target = target or task.targets[0]
    tile = task.tile if tile is None else tile
    margin = task.margin if margin is None else margin
    task.check(target, margin)
    kind = get_target(target)
    if tiles_per_shard < 1:
        raise VelnetInputError(None, f"tiles_per_shard must be >= 1. Received: tiles_per_shard={tiles_per_shard}")
    meta = _common_meta(field_files)
    if predictions[0]:
        meta["fields"] += predicted_names(predictions[0])
    spec = _with_density_model(inputs or task.inputs(target, meta["fields"]), predictions)
    nmesh = meta["nmesh"]
    box_splits = [split] * len(field_files) if isinstance(split, str) else list(split)
    if len(box_splits) != len(field_files):
        raise VelnetInputError(None, f"{len(box_splits)} splits for {len(field_files)} fields files; "
                                     f"give one split, or one per file. Received: split={split}")
    unknown = sorted(set(box_splits) - {"region", *SPLITS})
    if unknown:
        raise VelnetInputError(None, f"--split takes 'region' or {', '.join(SPLITS)} (one, or one per input). "
                                     f"Received: {unknown}")
    try:
        check_grid(nmesh, tile, subfield)
        check_context(nmesh, spec.context)
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
    # a task and a spec only when not the legacy defaults, so datasets made before they existed still match
    if task.name != LEGACY_TASK:
        config["task"] = task.name
    if task.name != LEGACY_TASK or spec.to_dict() != {"linear": False}:
        config[SPEC_KEY] = spec.to_dict()
    if subfield is not None:
        config["subfield"] = subfield
    sources = [{"file": str(f), "sha256": sha256(f),
                **({"predictions": {"file": str(p), "sha256": sha256(p)}} if p else {})}
               for f, p in zip(field_files, predictions)]
    existing = _existing(outdir, config, sources, overwrite)
    if existing is not None:
        return existing

    scale = float(target_scale) if target_scale else nearest_power_of_two(
        _rms(field_files, [target], origins, labels, tile, summed=kind.normalisation == "std"))
    if spec.fields and spec.field_scale is None:
        spec = dataclasses.replace(spec, field_scale=nearest_power_of_two(
            _rms(field_files, spec.fields, origins, labels, tile, summed=True)))
    nshards = {s: -(-totals[s] // tiles_per_shard) for s in SPLITS}
    tile_shape = (tile,) * 3 + (kind.components,)
    rng = {s: np.random.default_rng([seed, i]) for i, s in enumerate(SPLITS)}
    positions = {s: rng[s].permutation(totals[s]) for s in SPLITS}
    with atomic_dir(outdir) as tmp, tqdm(total=sum(totals[s] for s in SPLITS), desc="tiles",
                                          unit="tile") as bar:
        writer = ShardWriter(tmp)
        first = {s: 0 for s in SPLITS}
        for box, path in enumerate(field_files):
            fields, windows = _box_windows(path, predictions[box], spec, kind, scale)
            y = fields[kind.name].value
            for s in SPLITS:
                kept = np.flatnonzero(labels[box] == s)
                pos = positions[s][first[s]:first[s] + len(kept)]
                first[s] += len(kept)
                kept, pos = kept[np.argsort(pos)], np.sort(pos)
                for start in range(0, len(kept), CHUNK):
                    chunk, where = kept[start:start + CHUNK], pos[start:start + CHUNK]
                    xs = windows(origins[chunk], tile + 2 * margin, margin)
                    ys = normalised(extract(y, origins[chunk], tile), scale).reshape(len(chunk), *tile_shape)
                    shard = where // tiles_per_shard
                    for i in np.unique(shard):
                        writer.append(shard_name(s, i, nshards[s]),
                                      [encode_record(xs[j], ys[j], origins[chunk[j]], box)
                                       for j in np.flatnonzero(shard == i)])
                    bar.update(len(chunk))
        manifest = _manifest(meta, config, task, spec, sources, scale, totals, counts, writer.entries(), kind)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        read_manifest(tmp)
    return read_manifest(outdir)


def _box_windows(path, predictions, spec, target, scale):
    """The fields of one box (those the inputs and the `Target` need) and its `InputWindows`."""
    fields = load_box(path, sorted({*spec.field_names(), target.name}), predictions)
    try:
        inputs = box_inputs(fields, spec, target, scale)
    except VelnetInputError as err:
        raise VelnetInputError(err.path or path, err.problem) from None
    return fields, InputWindows(inputs, fields[DENSITY_FIELD].value if spec.context else None, spec)


def _predictions(field_files, predictions):
    """One predictions file (or None) per fields file; VelnetInputError for another count."""
    if predictions is None:
        return [None] * len(field_files)
    predictions = [Path(p).resolve() for p in predictions]
    if len(predictions) != len(field_files):
        raise VelnetInputError(None, f"one predictions file per fields file: {len(field_files)} fields files, "
                                     f"{len(predictions)} predictions files")
    for path, predicted in zip(field_files, predictions):
        check_predictions(path, predicted)
    return predictions


def _with_density_model(spec, predictions):
    """`spec` with the model that predicted its predicted density (the predictions files' "model"
    attribute), so that `velnet predict` can run it on other boxes; VelnetInputError where the
    files name several models, or another than `spec.density_model`."""
    if spec.density != "predicted" or not predictions[0]:
        return spec
    name = PREDICTED_DENSITY[len(PREDICTED):]
    models = set()
    for path in predictions:
        with open_h5(path, "r") as h5:
            models.add(str(h5[name].attrs.get("model", "")) if name in h5 else "")
    if len(models) > 1:
        raise VelnetInputError(predictions[0],
                               f"the boxes' {name} were predicted by different models: {sorted(models)}")
    model = models.pop() or None
    if spec.density_model and model and Path(spec.density_model).resolve() != Path(model).resolve():
        raise VelnetInputError(predictions[0], f"its {name} was predicted by {model}, not by {spec.density_model}")
    return dataclasses.replace(spec, density_model=spec.density_model or model)


def _common_meta(field_files):
    """Metadata shared by all fields files, and the fields of the first ("fields");
    VelnetInputError naming the first that differs."""
    meta = {**read_meta(field_files[0]), "fields": field_names(field_files[0])}
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
                                       f"{OVERWRITE_HINT}") from None
    if manifest.provenance.get("config") == config and manifest.provenance.get("sources") == sources:
        return manifest
    raise VelnetInputError(outdir, f"holds a different dataset (other config or source fields); {OVERWRITE_HINT}")


def normalised(target, scale):
    """Targets as stored: float32 of target / scale (exact when scale is a power of two)."""
    return (target.astype(np.float64) / scale).astype(np.float32)


def nearest_power_of_two(x):
    """2**round(log2(x)): a scale by which float division and multiplication are exact."""
    return float(2.0 ** np.round(np.log2(x)))


def _rms(field_files, names, origins, labels, tile, summed=False):
    """Root mean square over the training tiles of all boxes of the components of a field
    (one name), or (`summed`) the standard deviation of the sum of scalar fields."""
    total, square, cells = 0.0, 0.0, 0
    for path, box_labels in zip(field_files, labels):
        train = origins[box_labels == "train"]
        if len(train):
            fields = load_fields(path, list(names))
            value = sum(extract(fields[name].value, train, tile).astype(np.float64) for name in names)
            total, square, cells = total + float(np.sum(value)), square + float(np.sum(value ** 2)), cells + value.size
    if not cells:
        raise VelnetInputError(field_files[0], "no training tiles to take the scale from; pass target_scale and "
                                               "a field_scale (from the training dataset's manifest)")
    rms = np.sqrt(max(square / cells - (total / cells) ** 2, 0.0)) if summed else np.sqrt(square / cells)
    if rms == 0:
        raise VelnetInputError(field_files[0], f"{' + '.join(names)} is {'constant' if summed else 'zero'} on every "
                                               "training tile")
    return float(rms)


def _manifest(meta, config, task, spec, sources, scale, totals, counts, shards, kind):
    tile, margin = config["tile"], config["margin"]
    size = tile + 2 * margin
    target, vector, units = kind.name, kind.vector, kind.units
    return Manifest(
        format=FORMAT, version=FORMAT_VERSION, task=task.name,
        cosmology=meta["cosmology"], box_size=meta["box_size"], nmesh=meta["nmesh"], redshift=meta["redshift"],
        input_name="ln_density" if spec.fields == () and spec.density == "ln" else "+".join(spec.field_names()),
        target_name=target, input_shape=[size, size, size, spec.channels],
        target_shape=[tile, tile, tile, kind.components], input_vector_slices=spec.vector_slices,
        target_vector_slices=[[0, 3]] if vector else [], input_spec=spec,
        tile={"input": size, "target": tile, "margin": margin,
              **({"subfield": config["subfield"]} if "subfield" in config else {})},
        normalisation={"input_transform": spec.describe(target), "target_scale": scale, "target_units": units,
                       "undo": f"{target} [{units}] = stored target * target_scale"},
        split={"mode": config["split"], "rule": _split_rule(config["split"]), "fractions": config["fractions"],
               "seed": config["seed"], "counts": totals, "per_box": counts},
        shards=shards,
        provenance={"sources": sources, "config": config,
                    "versions": versions(("velnet", "numpy", "h5py", "google-crc32c")),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    ).to_dict()


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
    sources = manifest.provenance["sources"]
    for source in [s for entry in sources for s in (entry, entry.get("predictions")) if s]:
        require_file(source["file"], "source fields file of the dataset (moved or deleted since `velnet prep`?)")
        if sha256(source["file"]) != source["sha256"]:
            raise VelnetInputError(source["file"], "changed since the dataset was made (sha256 differs)")
    spec = manifest.input_spec
    tile, margin = manifest.tile["target"], manifest.tile["margin"]
    scale, target = manifest.target_scale, get_target(manifest.target_name)
    checked = {}
    for split in SPLITS:
        if not manifest.split["counts"][split]:
            continue
        x, y, origins, boxes = read_split_arrays(manifest, split)
        for box in np.unique(boxes):
            source = sources[box]
            fields, windows = _box_windows(source["file"], source.get("predictions", {}).get("file"), spec, target,
                                           scale)
            sel = boxes == box
            if not (np.array_equal(x[sel], windows(origins[sel], tile + 2 * margin, margin))
                    and np.array_equal(y[sel], normalised(extract(fields[target.name].value, origins[sel], tile), scale)
                                       .reshape(y[sel].shape))):
                raise VelnetInputError(dataset_dir, f"{split!r} tiles of box {box} ({source['file']}) "
                                                    "differ from that fields file")
        checked[split] = len(x)
    return checked
