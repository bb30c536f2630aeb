"""An archive folder of scenes: find them, keep the newest processing of each tile, open one.

Entries directly under the archive folder are EnMAP L2A products (a folder or a ``.zip``
named like a product) or generic hyperspectral images (GeoTIFF / ENVI with band
wavelengths). The same product delivered both as a folder and as a ``.zip`` (a *twin*) is
one scene: the folder is used, the zip is a duplicate.
"""

from __future__ import annotations

import re
from pathlib import Path

from spectralearth.enmap.generic import is_generic_image, open_generic
from spectralearth.enmap.l2a import (
    PRODUCT_NAME_RE,
    is_product_entry,
    open_product,
    product_name,
    scene_key_of,
)
from spectralearth.enmap.scene import ProductError, Scene


def find_products(archive: str | Path) -> list[Path]:
    """Product folders directly under ``archive`` (L2A names), sorted."""
    archive = Path(archive)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive folder not found: {archive}")
    return sorted(p for p in archive.iterdir() if p.is_dir() and PRODUCT_NAME_RE.match(p.name))


def find_scenes(archive: str | Path) -> list[Path]:
    """L2A products and generic hyperspectral images directly under ``archive``, sorted."""
    archive = Path(archive)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive folder not found: {archive}")
    return sorted(p for p in archive.iterdir() if is_product_entry(p) or is_generic_image(p))


def find_product_path(archive: str | Path, name: str) -> Path:
    """The folder or zip of product ``name`` (the folder when both exist), or the generic
    image whose stem is ``name``, in ``archive`` (names are checked first, so ``..`` or an
    absolute path never reach outside)."""
    if not PRODUCT_NAME_RE.match(name):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
            raise ProductError(name, "not a valid scene name")
        for candidate in sorted(Path(archive).glob(f"{name}.*")):
            if is_generic_image(candidate):
                return candidate
        raise ProductError(name, f"not found in the archive {archive}")
    for candidate in (
        Path(archive) / name,
        Path(archive) / f"{name}.zip",
        Path(archive) / f"{name}.ZIP",
    ):
        if candidate.exists():
            return candidate
    raise ProductError(name, f"not found in the archive {archive}")


def is_twin_preferred(entry: Path, other: Path) -> bool:
    """Of two entries of the same product (folder and zip), True if ``entry`` is the one
    used: the folder, or the first in sorted order when both are of one kind."""
    if entry.is_dir() != other.is_dir():
        return entry.is_dir()
    return str(entry) <= str(other)


def newest_processings(entries: list[Path]) -> list[Path]:
    """Of several processings of one datatake/tile keep the newest (latest processing time);
    of a product present as folder and zip keep the folder (:func:`is_twin_preferred`);
    entries that are not L2A products pass through."""
    best: dict[str, Path] = {}
    for entry in entries:
        name = product_name(entry)
        if not PRODUCT_NAME_RE.match(name):
            best[f"other:{entry.name}"] = entry
            continue
        key = scene_key_of(name)
        held = best.get(key)
        if held is None or name > product_name(held):
            best[key] = entry
        elif name == product_name(held) and is_twin_preferred(entry, held):
            best[key] = entry
    return sorted(best.values())


def scene_name(path: str | Path) -> str:
    """Partition key / catalogue id of a scene: the L2A product name or the image's stem."""
    path = Path(path)
    return product_name(path) if is_product_entry(path) else path.stem


def open_scene(path: str | Path) -> Scene:
    """An L2A product (folder or zip) or any image whose bands carry wavelengths, validated
    (see :mod:`~spectralearth.enmap.l2a`, :mod:`~spectralearth.enmap.generic`).

    Every failure is a :class:`ProductError` naming the scene, whatever went wrong inside
    (an unexpected exception is wrapped with its type), so a caller can skip one scene and
    go on with the others.
    """
    path = Path(path)
    try:
        if is_product_entry(path):
            return open_product(path)
        if is_generic_image(path):
            return open_generic(path)
    except ProductError:
        raise
    except Exception as exc:  # a broken file must read as a refusal of that scene
        raise ProductError(
            scene_name(path), f"cannot be read: {type(exc).__name__}: {exc}"
        ) from exc
    raise ProductError(
        path.name,
        "neither an EnMAP L2A product (folder or .zip) nor an image with band wavelengths",
    )
