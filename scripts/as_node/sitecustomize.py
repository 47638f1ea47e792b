"""Only for scripts/gpu_campaign.sh --tiny: the modules named in VELNET_HIDE_MODULES look
uninstalled (import fails, importlib.util.find_spec gives None), as on a GPU node without
TensorFlow or nbodykit, so that the dry run on a full environment catches a dependency on them."""
import os
import sys

for _name in os.environ.get("VELNET_HIDE_MODULES", "").split():
    sys.modules.setdefault(_name, None)
