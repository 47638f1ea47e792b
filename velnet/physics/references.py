"""The classical references as files: which kind a JSON file or dict holds, loaded as its class.

Three kinds, each fitted on training boxes and saved as JSON with a "format" key:
`ClassicalEstimator` (the matter's velocity from its density, Wu et al. 2021's task),
`HaloFilter` (the per-(k, mu) linear filter of redshift-space halo channels) and
`Reconstruction` (iterative redshift-space reconstruction of the halos' displacement). The
halo references give the density, velocity and momentum at once (`predict(box)`).
"""
import json

from velnet.errors import VelnetInputError
from velnet.files import require_file
from velnet.physics.classical import FORMAT as CLASSICAL
from velnet.physics.classical import ClassicalEstimator
from velnet.physics.halo_filter import FORMAT as HALO_FILTER
from velnet.physics.halo_filter import HaloFilter
from velnet.physics.reconstruction import FORMAT as RECONSTRUCTION
from velnet.physics.reconstruction import Reconstruction

KINDS = {CLASSICAL: ClassicalEstimator, HALO_FILTER: HaloFilter, RECONSTRUCTION: Reconstruction}
"""Each reference class by the "format" of its files."""
HALO_KINDS = (HaloFilter, Reconstruction)


def reference_format(path):
    """The "format" a JSON file declares in its first 4 KiB, or None (not such a file, unreadable)."""
    try:
        with open(path) as f:
            head = f.read(4096)
    except (OSError, UnicodeDecodeError):
        return None
    return next((name for name in KINDS if f'"format": "{name}"' in head), None)


def from_dict(state, path=None):
    """The reference a dict describes (as its class's `to_dict` wrote it).

    Raises:
        VelnetInputError: naming `path`: not a dict of a known format, or malformed.
    """
    kind = KINDS.get(state.get("format")) if isinstance(state, dict) else None
    if kind is None:
        raise VelnetInputError(path, f"not a velnet classical reference: its format must be one of {sorted(KINDS)}")
    return kind.from_dict(state, path)


def load_reference(path):
    """Read a classical reference file of any kind.

    Raises:
        VelnetInputError: naming the file: missing, not JSON, not a reference, or malformed.
    """
    path = require_file(path, "classical reference file")
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise VelnetInputError(path, f"not a velnet classical reference (not JSON: {err})") from None
    return from_dict(state, path)
