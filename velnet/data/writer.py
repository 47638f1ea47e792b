"""Writing shard files: framed records appended, counted and hashed for the manifest."""
import hashlib
from pathlib import Path


class ShardWriter:
    """Append framed records to the shard files of a dataset folder, counting and hashing them.

    Args:
        folder: the (temporary) dataset folder.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self._counts, self._hashes = {}, {}

    def append(self, name, records):
        """Append records (from `encode_record`) to shard file `name`."""
        self._hashes.setdefault(name, hashlib.sha256())
        with open(self.folder / name, "ab") as f:
            for record in records:
                f.write(record)
                self._hashes[name].update(record)
        self._counts[name] = self._counts.get(name, 0) + len(records)

    def entries(self):
        """Manifest entries `{file, split, count, sha256}` of the shards written, by name."""
        return [{"file": name, "split": name.split("-")[0], "count": self._counts[name],
                 "sha256": self._hashes[name].hexdigest()} for name in sorted(self._counts)]


def sha256(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
