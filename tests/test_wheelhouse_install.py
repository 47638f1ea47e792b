"""The wheelhouse install a GPU node runs (scripts/campaign.py install): offline, from a folder of
wheels, into --target, only the packages the node lacks, never velnet itself."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "scripts" / "campaign.py"


def wheel(folder, name, version, code):
    """A wheel of a one-module project `name`, built offline by pip (setuptools, no build isolation)."""
    project = folder / "src" / name
    (project / name.replace("-", "_")).mkdir(parents=True)
    (project / name.replace("-", "_") / "__init__.py").write_text(code)
    (project / "setup.py").write_text(f"from setuptools import setup\nsetup(name={name!r}, version={version!r}, "
                                      f"packages=[{name.replace('-', '_')!r}])\n")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                    "-w", str(folder / "wheelhouse"), str(project)], check=True, capture_output=True)


def install(wheelhouse, site, state):
    return subprocess.run([sys.executable, str(CAMPAIGN), "install", "--wheelhouse", str(wheelhouse),
                           "--site", str(site), "--state", str(state)], capture_output=True, text=True)


def test_the_wheelhouse_installs_what_the_node_lacks_and_nothing_else(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    wheel(tmp_path, "velnet-probe", "1.0", "ANSWER = 42\n")       # missing on the node
    wheel(tmp_path, "h5py", "0.0.1", "raise ImportError('not the node\\'s h5py')\n")  # the node has its own
    wheel(tmp_path, "velnet", "0.0.1", "")                            # runs from the carried tree
    site, state = tmp_path / "site", tmp_path / "state"
    done = install(tmp_path / "wheelhouse", site, state)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((state / "install.json").read_text())
    assert [w.split("-")[0] for w in record["installed"]] == ["velnet_probe"]
    assert "h5py" in record["already_there"] and "velnet" not in json.dumps(record["already_there"])
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == ["velnet_probe"]
    probe = subprocess.run([sys.executable, "-c", "import velnet_probe, h5py; print(velnet_probe.ANSWER, "
                            "h5py.__version__)"], env={"PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.split()[0] == "42" and probe.stdout.split()[1] != "0.0.1"


def test_a_wheelhouse_without_wheels_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    done = install(tmp_path / "empty", tmp_path / "site", tmp_path / "state")
    assert done.returncode != 0 and str(tmp_path / "empty") in done.stderr and "holds no wheels" in done.stderr
    assert not (tmp_path / "site").exists()
