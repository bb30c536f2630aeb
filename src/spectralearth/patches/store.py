"""The training store: release-layout GeoTIFFs, the patch index and its version.

One stored copy (SpectralEarth's published loaders and split files use this layout)::

    <patches>/enmap/<location:07d>/<scene:05d>.tif     int16, 202 bands, reflectance x 10000

Each patch is written uncompressed and band-sequential, one strip per band, the tags first,
so its pixels are one contiguous block of ``bands * P * P * 2`` bytes. The block's file
offset (read back from the TIFF tags with tifffile), the file size and a CRC-32 of the pixels
are recorded in the index, and the loader reads that block straight into its batch
(:mod:`spectralearth.patches.reader`); files not laid out so (compressed, tiled, written by
other tools) are read through rasterio. The files stay ordinary GeoTIFFs (CRS, transform,
nodata, wavelengths in the band tags and descriptions) that GDAL, QGIS and torchgeo open.

``index.parquet`` (GeoParquet, WGS84 geometry) is built from per-scene fragments
(``scenes/<scene>.parquet``) and carries, in its pandas attrs, the store format, a content
version (:func:`index_version`: a hash of every row's patch id, path, split, size and
checksum) and the digest of every fragment it was built from, so a reader can tell an index
that no longer matches what curation wrote.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from shapely import wkb

from spectralearth.io import atomic_path
from spectralearth.patches.grid import Registry

REGISTRY_FILE = "registry.sqlite"
INDEX_FILE = "index.parquet"
NODATA = -32768
# Version of the store's index columns and attrs (1: one copy, offsets and checksums)
STORE_FORMAT = 1
ATTRS_KEY = "spectralearth"
# Per-patch columns that tie an index row to the bytes on disk
STORE_COLUMNS = ("file_size", "data_offset", "pixels_crc32")
# Written before a scene's patches replace its earlier ones, removed once its fragment is
# committed: a marker left behind means a curation stopped half-way through that scene
PENDING_SUFFIX = ".pending"


class PatchWriteError(OSError):
    """A patch GeoTIFF could not be written (disk full, I/O error); names the file (also as
    ``filename``, so a whole-archive run sees an error of its output folder and stops)."""

    def __init__(self, code: int, message: str, path: Path):
        super().__init__(code, message)
        self.filename = str(path)

    def __str__(self) -> str:
        return f"[Errno {self.errno}] {self.strerror}"


class StaleIndexError(RuntimeError):
    """The index does not match the curated folder it describes; says what to rerun."""


@dataclass(frozen=True)
class PixelBlock:
    """Where a GeoTIFF's pixels are: ``offset`` of one contiguous band-sequential block of
    ``nbytes`` (``-1`` when the file is compressed, tiled or interleaved: read it with
    rasterio), its numpy ``dtype`` (with byte order) and ``shape`` [bands, height, width]."""

    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, int, int]

    @property
    def contiguous(self) -> bool:
        return self.offset >= 0


@dataclass(frozen=True)
class StoredPatch:
    """What the index records of one written patch file."""

    file_size: int
    data_offset: int
    pixels_crc32: int


def pixels_crc32(pixels: np.ndarray) -> int:
    """CRC-32 of a patch's pixels as little-endian int16, band-sequential (C order): the same
    value whatever the file's layout, so compressed files are checked like the rest."""
    arr = np.ascontiguousarray(pixels, dtype="<i2")
    return zlib.crc32(memoryview(arr).cast("B"))


def pixel_block(path: str | os.PathLike) -> PixelBlock:
    """Read the TIFF tags (not the pixels) of ``path`` and say where its pixels are."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        bands, height, width = int(page.samplesperpixel), int(page.imagelength), page.imagewidth
        dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
        shape = (bands, height, int(width))
        nbytes = int(np.prod(shape)) * dtype.itemsize
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        simple = (
            int(page.compression) == 1
            and int(page.predictor) == 1
            and (int(page.planarconfig) == 2 or bands == 1)
            and not page.is_tiled
            and len(tif.pages) >= 1
            and len(offsets) > 0
        )
        contiguous = (
            simple
            and bool(np.all(offsets[1:] == offsets[:-1] + counts[:-1]))
            and int(counts.sum()) == nbytes
        )
    return PixelBlock(int(offsets[0]) if contiguous else -1, nbytes, dtype.str, shape)


def write_patch(
    path: Path, data: np.ndarray, crs, transform, wavelengths, tags: dict
) -> StoredPatch:
    """Write one patch GeoTIFF (int16, band-sequential, one strip per band, uncompressed,
    wavelengths in the band tags and descriptions) atomically; return its size, the offset of
    its pixel block and the pixels' CRC-32. A failed write (disk full...) raises
    :class:`PatchWriteError` naming ``path`` and leaves no file."""
    count, h, w = data.shape
    profile = dict(
        driver="GTiff",
        dtype="int16",
        count=count,
        height=h,
        width=w,
        crs=crs,
        transform=transform,
        nodata=NODATA,
        interleave="band",
        tiled=False,
        blockysize=h,  # one strip per band: the pixels are one block after the header
    )
    try:
        with atomic_path(path, fsync=False) as tmp:  # the caller flushes once per scene
            with rasterio.open(tmp, "w", **profile) as dst:
                # tags before pixels: GDAL writes the header first and never moves it after
                dst.update_tags(wavelengths=",".join(f"{x:.3f}" for x in wavelengths), **tags)
                for i, wl in enumerate(wavelengths, start=1):
                    dst.set_band_description(i, f"{wl:.3f} nm")
                    dst.update_tags(i, wavelength=f"{wl:.3f}", wavelength_units="nm")
                dst.write(data.astype(np.int16, copy=False))
            block = pixel_block(tmp)
            size = tmp.stat().st_size
            if block.offset >= 0 and size < block.offset + block.nbytes:
                raise OSError(errno.EIO, f"{size} bytes, short of its pixel block")
    except (rasterio.errors.RasterioError, OSError) as exc:
        code = getattr(exc, "errno", None) or errno.EIO
        why = str(exc)
        try:  # GDAL says "Write failed"; say why when it is a full disk
            fs = os.statvfs(Path(path).parent)
            free = fs.f_bavail * fs.f_frsize
        except OSError:
            free = None
        if code == errno.ENOSPC or (free is not None and free < data.nbytes):
            code = errno.ENOSPC
            why += f" (the disk is full: {free} bytes free, a patch needs {data.nbytes})"
        raise PatchWriteError(code, f"cannot write patch {path}: {why}", path) from exc
    return StoredPatch(int(size), block.offset, pixels_crc32(data))


def patch_relpath(location_id: int, scene_id: int) -> str:
    return f"enmap/{location_id:07d}/{scene_id:05d}.tif"


def fragment_paths(patches_root: Path, scene: str) -> tuple[Path, Path]:
    """Per-scene index fragment and curation report, merged later by build_index."""
    base = Path(patches_root) / "scenes"
    return base / f"{scene}.parquet", base / f"{scene}.json"


def pending_marker(patches_root: Path, scene: str) -> Path:
    return Path(patches_root) / "scenes" / f"{scene}{PENDING_SUFFIX}"


def pending_scenes(patches_root: str | os.PathLike) -> list[str]:
    """Scenes whose curation stopped while replacing their patches (markers left behind)."""
    folder = Path(patches_root) / "scenes"
    return sorted(p.name[: -len(PENDING_SUFFIX)] for p in folder.glob(f"*{PENDING_SUFFIX}"))


def location_folder(patches_root: Path, location_id: int) -> Path:
    return Path(patches_root) / Path(patch_relpath(location_id, 0)).parent


def with_location_ids(frame: pd.DataFrame, ids: dict[str, int]) -> pd.DataFrame:
    """Set ``location_id``, ``patch_id`` and ``path`` from the registry's current ids.

    Fragments name locations by key; ids are looked up when read because a later scene can
    move a location to another id (see :class:`~spectralearth.patches.grid.Registry`).
    """
    frame = frame.copy()
    if not len(frame):
        for col, dtype in (("location_id", "int64"), ("patch_id", str), ("path", str)):
            frame[col] = pd.Series(dtype=dtype)
        return frame
    missing = sorted(set(frame["location_key"]) - set(ids))
    if missing:
        raise KeyError(f"location keys not in the registry: {missing[:5]}")
    loc = frame["location_key"].map(ids).astype("int64")
    frame["location_id"] = loc
    frame["patch_id"] = [f"{a:07d}/{b:05d}" for a, b in zip(loc, frame["scene_id"], strict=True)]
    frame["path"] = [patch_relpath(a, b) for a, b in zip(loc, frame["scene_id"], strict=True)]
    first = ["patch_id", "location_id", "scene_id", "location_key"]
    return frame[first + [c for c in frame.columns if c not in first]]


def read_fragment(patches_root: str | Path, scene: str, registry: Registry | None = None):
    """One scene's index rows with current location ids and paths."""
    patches_root = Path(patches_root)
    frame = pd.read_parquet(fragment_paths(patches_root, scene)[0])
    registry = registry or Registry(patches_root / REGISTRY_FILE)
    keys = frame["location_key"] if "location_key" in frame.columns else []
    return with_location_ids(frame, registry.location_ids(keys))


def assign_split(location_key: str, val_frac: float, test_frac: float) -> str:
    """Deterministic, location-disjoint split from a hash of the location key (stable even
    when a location's id moves)."""
    u = int(hashlib.sha256(str(location_key).encode()).hexdigest()[:8], 16) / 2**32
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "val"
    return "train"


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def compute_index_version(index: pd.DataFrame) -> str:
    """Content hash of what ties an index to the pixels: every row's patch id, path, split,
    file size, block offset and pixel checksum (rows in patch-id order)."""
    cols = ["patch_id", "path", "split", *STORE_COLUMNS]
    h = hashlib.sha256(f"spectralearth-store:{STORE_FORMAT}".encode())
    if len(index):
        frame = pd.DataFrame(index)[cols].sort_values("patch_id", kind="stable")
        for rec in frame.itertuples(index=False):
            h.update("\x1f".join(str(v) for v in rec).encode() + b"\x1e")
    return "v1-" + h.hexdigest()[:24]


def build_index(patches_root: str | Path, val_frac: float, test_frac: float) -> gpd.GeoDataFrame:
    """Merge the per-scene fragments into ``index.parquet`` (GeoParquet, WGS84 geometry).

    Native footprints differ in CRS between UTM zones, so they are kept as WKT with their
    ``crs`` column; the active geometry is WGS84. Rows are sorted by patch id, so the file
    is the same whatever order the scenes were curated in. Refuses (naming the scene) while
    a scene's curation marker says its patches were being replaced when a run stopped, and
    fragments written before the single-copy store (migrate them first).
    """
    root = Path(patches_root)
    registry = Registry(root / REGISTRY_FILE)
    with registry.lock():  # no scene moves locations or commits while this reads
        registry.apply_moves(lambda loc: location_folder(root, loc))
        stopped = pending_scenes(root)
        if stopped:
            raise StaleIndexError(_stopped_message(root, stopped))
        frags = sorted((root / "scenes").glob("*.parquet"))
        digests = {f.name[: -len(".parquet")]: file_digest(f) for f in frags}
        frames = [read_fragment(root, f.name[: -len(".parquet")], registry) for f in frags]
    for name, frame in zip(digests, frames, strict=True):
        if len(frame) and not set(STORE_COLUMNS) <= set(frame.columns):
            raise StaleIndexError(
                f"{root}: scene {name} was curated before the single-copy store (its fragment "
                "has shard columns, no checksums): run migrate_store on the folder "
                "(`spectralearth migrate-store ROOT`) or curate it again"
            )
    frames = [f for f in frames if len(f)]
    if frames:
        df = pd.concat(frames, ignore_index=True)
        df["geometry"] = df["geometry"].map(wkb.loads)
    else:
        df = pd.DataFrame(
            {
                "patch_id": pd.Series(dtype=str),
                "location_id": pd.Series(dtype="int64"),
                "location_key": pd.Series(dtype=str),  # an archive where no window passed
                "path": pd.Series(dtype=str),
                **{c: pd.Series(dtype="int64") for c in STORE_COLUMNS},
                "geometry": [],
            }
        )
    if df["patch_id"].duplicated().any():
        dup = df.loc[df["patch_id"].duplicated(), "patch_id"].tolist()[:5]
        raise ValueError(f"duplicate patch ids across scene fragments: {dup}")
    df["split"] = [assign_split(x, val_frac, test_frac) for x in df["location_key"]]
    df = df.sort_values("patch_id").reset_index(drop=True)
    return write_index(root, gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326"), digests)


def write_index(
    root: Path, index: gpd.GeoDataFrame, fragments: dict[str, str] | None = None, **extra
) -> gpd.GeoDataFrame:
    """Write ``<root>/index.parquet`` (atomic) with the store format, the content version and
    the digests of the fragments it was built from (``None``: a released tree, no fragments)
    in its attrs; return the index with those attrs."""
    for col in STORE_COLUMNS:
        index[col] = index[col].astype("int64")
    index.attrs = {
        ATTRS_KEY: {
            "store_format": STORE_FORMAT,
            "index_version": compute_index_version(index),
            "fragments": fragments,
            **extra,
        }
    }
    with atomic_path(Path(root) / INDEX_FILE) as tmp:
        index.to_parquet(tmp, index=False)
    return index


def read_index(patches_root: str | Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(Path(patches_root) / INDEX_FILE)


def index_attrs(index: pd.DataFrame) -> dict:
    """The store's attrs of a read index (empty for an index written before them)."""
    return dict(index.attrs.get(ATTRS_KEY) or {})


def index_version(root: str | os.PathLike) -> str:
    """The version id of ``<root>/index.parquet``: a hash of its contents that any change of
    a patch's pixels, path or split changes (recomputed here, so a hand-edited index does
    not keep its old version). Raises naming the file when the index is missing, predates
    the single-copy store, or its recorded version differs from its contents."""
    path = Path(root) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no patch index {path}: curate the folder (`spectralearth curate`) or index a "
            "released tree (`spectralearth index-release ROOT`)"
        )
    index = pd.read_parquet(path, columns=["patch_id", "path", "split"] + _present(path))
    return checked_version(path, index)


def checked_version(path: Path, index: pd.DataFrame) -> str:
    recorded = index_attrs(index).get("index_version")
    if recorded is None or not set(STORE_COLUMNS) <= set(index.columns):
        raise StaleIndexError(
            f"{path} predates the single-copy store (no version, offsets or checksums): "
            "run migrate_store on its folder (`spectralearth migrate-store ROOT`)"
        )
    actual = compute_index_version(index)
    if actual != recorded:
        raise StaleIndexError(
            f"{path}: its rows do not match its recorded version ({recorded}, rows give "
            f"{actual}): the file was edited or mixed; rebuild it (`spectralearth curate` or "
            "`spectralearth index-release`)"
        )
    return recorded


def _present(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    return [c for c in STORE_COLUMNS if c in names]


def check_fragments(root: Path, index: pd.DataFrame) -> None:
    """A curated folder's index must be the one built from its current fragments: refuse,
    naming the scene, when a scene stopped half-way, or was (re)curated or removed since."""
    stopped = pending_scenes(root)
    if stopped:
        raise StaleIndexError(_stopped_message(root, stopped))
    recorded = index_attrs(index).get("fragments")
    if recorded is None:  # a released tree: no fragments
        return
    on_disk = {
        f.name[: -len(".parquet")]: f for f in sorted((Path(root) / "scenes").glob("*.parquet"))
    }
    for scene in sorted(set(recorded) | set(on_disk)):
        if scene not in on_disk:
            why = "its fragment is gone"
        elif scene not in recorded:
            why = "it was curated after the index was built"
        elif file_digest(on_disk[scene]) != recorded[scene]:
            why = "it was curated again after the index was built"
        else:
            continue
        raise StaleIndexError(
            f"{Path(root) / INDEX_FILE} is stale for scene {scene}: {why}. Rebuild the index "
            "(`spectralearth curate` rebuilds it after its scenes; Dagster: patch_index)"
        )


def _stopped_message(root: Path, scenes: list[str]) -> str:
    listed = ", ".join(scenes[:3]) + (f" and {len(scenes) - 3} more" if len(scenes) > 3 else "")
    return (
        f"{root}: a curation stopped while replacing the patches of scene {listed}: its files "
        "may not match the index. Curate that scene again (`spectralearth curate`, or its "
        "Dagster partition), then rebuild the index (a product no longer in the archive: "
        "remove its scenes/<scene>.* files first)"
    )


def compute_band_stats(
    patches_root: str | Path, out: str | Path | None = None, split: str = "train"
) -> dict:
    """Compatibility name: see :func:`spectralearth.patches.stats.compute_band_stats`."""
    from spectralearth.patches.stats import compute_band_stats as _compute

    return _compute(patches_root, out, split)


def scene_report(patches_root: Path, scene: str) -> dict:
    """The curation report JSON of one scene (``scenes/<scene>.json``)."""
    return json.loads(fragment_paths(patches_root, scene)[1].read_text())
