"""Turn a folder curated before the single-copy store into one (``migrate_store``).

Such a folder holds every patch twice: the release GeoTIFFs and ``shards/<scene>.npy``, with
fragments and an index that point at shard rows and record no checksums. Migration, holding
the folder as a whole-archive curation would (no curation may run meanwhile):

1. for each scene fragment without the store columns: reads each patch's GeoTIFF, checks its
   pixels equal the patch's shard row (the two copies must agree: a mismatch stops the
   migration naming both files, nothing changed), records the file size, pixel block
   offset and CRC-32, and rewrites the fragment (atomic) without the shard columns;
2. rebuilds ``index.parquet`` (versioned);
3. removes ``shards/`` (with ``remove_shards``), halving the bytes on disk.

Rerunning it is safe: migrated fragments are left as they are. Killed between 1 and 3, the
folder still refuses to train from a stale index (readers check the fragments) until it is
rerun.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spectralearth.io import atomic_path
from spectralearth.patches.lock import curation_lock
from spectralearth.patches.reader import VerifiedFiles, file_crc32, fingerprint
from spectralearth.patches.store import (
    REGISTRY_FILE,
    STORE_COLUMNS,
    build_index,
    fragment_paths,
    pixel_block,
    pixels_crc32,
    read_fragment,
)


class MigrationError(RuntimeError):
    """The legacy folder's two copies disagree, or a file is missing; names them."""


@dataclass(frozen=True)
class StoreMigration:
    root: Path
    scenes_migrated: int
    patches: int
    shard_bytes_removed: int
    index_version: str
    seconds: float

    def metadata(self) -> dict:
        return {
            "root": str(self.root),
            "scenes_migrated": self.scenes_migrated,
            "patches": self.patches,
            "shard_bytes_removed": self.shard_bytes_removed,
            "index_version": self.index_version,
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        return (
            f"migrate-store: {self.scenes_migrated} scene(s) migrated, {self.patches} patches, "
            f"{self.shard_bytes_removed / 1e6:.1f} MB of shards removed -> "
            f"{self.root / 'index.parquet'} ({self.index_version})"
        )


def migrate_store(
    root: str | os.PathLike,
    val_frac: float,
    test_frac: float,
    *,
    remove_shards: bool = True,
) -> StoreMigration:
    """Migrate ``root`` in place (module doc); ``val_frac``/``test_frac`` as for
    :func:`~spectralearth.patches.store.build_index` (params.yaml ``curate``)."""
    start = time.perf_counter()
    root = Path(root)
    if not (root / "scenes").is_dir() or not (root / REGISTRY_FILE).is_file():
        raise FileNotFoundError(f"{root} is not a curated folder (no scenes/ or {REGISTRY_FILE})")
    migrated = 0
    with curation_lock(root):
        cache = VerifiedFiles()
        for frag in sorted((root / "scenes").glob("*.parquet")):
            scene = frag.name[: -len(".parquet")]
            raw = pd.read_parquet(frag)
            if set(STORE_COLUMNS) <= set(raw.columns):
                continue
            rows = read_fragment(root, scene)
            sizes, offsets, crcs, seen = [], [], [], []
            for rec in rows.to_dict("records"):
                path = root / rec["path"]
                if not path.is_file():
                    raise MigrationError(f"{path} (scene {scene}) is missing: curate it again")
                st = os.stat(path)
                block = pixel_block(path)
                offset = block.offset if block.dtype == "<i2" else -1
                crc = file_crc32(str(path), offset, block.shape)
                shard = rec.get("shard")
                if isinstance(shard, str) and (root / "shards" / shard).is_file():
                    copy = np.load(root / "shards" / shard, mmap_mode="r")[int(rec["shard_index"])]
                    if pixels_crc32(copy) != crc:
                        raise MigrationError(
                            f"{path} and row {int(rec['shard_index'])} of "
                            f"{root / 'shards' / shard} (scene {scene}) hold different pixels:"
                            " the folder is inconsistent; curate that scene again"
                        )
                sizes.append(int(st.st_size))
                offsets.append(int(offset))
                crcs.append(int(crc))
                seen.append((fingerprint(st), crc))
            out = raw.drop(columns=[c for c in ("shard", "shard_index") if c in raw.columns])
            out["file_size"], out["data_offset"], out["pixels_crc32"] = sizes, offsets, crcs
            with atomic_path(fragment_paths(root, scene)[0]) as tmp:
                out.to_parquet(tmp, index=False)
            cache.record(seen)
            migrated += 1
        index = build_index(root, val_frac, test_frac)
        removed = 0
        if remove_shards and (root / "shards").is_dir():
            removed = sum(p.stat().st_size for p in (root / "shards").rglob("*") if p.is_file())
            shutil.rmtree(root / "shards")
    return StoreMigration(
        root,
        migrated,
        len(index),
        removed,
        index.attrs["spectralearth"]["index_version"],
        time.perf_counter() - start,
    )
