"""Runnable experiments, one module per paper: a frozen CONFIG dict and `run(outdir, config)`."""
import json
import logging
import shlex

log = logging.getLogger("experiments")


def run_velnet(*argv):
    """Run one velnet command, logging it as a shell line; raise SystemExit if it fails."""
    from velnet.cli import main as velnet

    argv = [str(a) for a in argv]
    log.info("$ velnet %s", shlex.join(argv))
    if velnet(argv) != 0:
        raise SystemExit(f"velnet {argv[0]} failed")


def with_overrides(config, items, error):
    """A copy of `config` with `KEY=JSON` overrides; `error(message)` for an unknown key."""
    out = dict(config)
    for item in items:
        key, _, value = item.partition("=")
        if key not in config:
            error(f"unknown CONFIG key {key!r}; known: {sorted(config)}")
        out[key] = json.loads(value)
    return out


def made_by(record, name):
    """A check for `velnet.files.check_output`: whether a folder holds `record` (a JSON file) written by `name`."""
    def is_own(folder):
        try:
            return json.loads((folder / record).read_text()).get("made_by") == name
        except (OSError, ValueError, AttributeError):
            return False
    return is_own


def write_study(out, name, record, markdown):
    """Write a measuring script's folder `out` whole or not at all: NAME.json (`record`) and NAME.md (`markdown`)."""
    from velnet.files import atomic_dir

    with atomic_dir(out) as tmp:
        (tmp / f"{name}.json").write_text(json.dumps(record, indent=1))
        (tmp / f"{name}.md").write_text(markdown)


def run_study(name, study, call, out):
    """A measuring script's command line: log at INFO, run `call()`, print the STUDY.md it wrote in `out`; a
    VelnetInputError ends it with the message, prefixed by `name`."""
    from pathlib import Path

    from velnet.errors import VelnetInputError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        call()
    except VelnetInputError as err:
        raise SystemExit(f"{name}: {err}") from None
    print((Path(out) / f"{study}.md").read_text())
