"""Scene-wide sliding-window inference to a GeoTIFF class map.

A trained downstream model (``spectralearth.models.heads``: encoder + head, saved beside the
evaluation results) runs over a whole scene (L2A product or generic image) in its 202-band
view (bands matched by wavelength, ``bands.select_view``), normalised with the band
statistics the model was trained with. Tiles of ``tile`` px overlap by ``overlap`` px; each
tile's class probabilities are weighted by a 2-D raised-cosine window (largest in the tile
centre, small but never zero at its border) and the weighted sums are divided by the summed
weights, so tile borders leave no seams (a model whose output is the same everywhere gives
the same map everywhere). The map is the arg-max class, ``uint8`` with a colour table, in the
scene's CRS and transform; pixels that are nodata in any band or flagged in a QL mask
(cloud by default) get :data:`NODATA_CLASS`.

The scene is read in strips of tile rows (a strip of ``tile`` rows at a time), so memory
holds a batch of tiles, the strip they come from and the ``[classes, rows, cols]``
accumulators, never the whole cube. Tiles are batched across strips (``batch_size`` per
forward pass: 8 on the CPU, 32 on a GPU by default) and run on ``device`` (``auto``: the GPU
when there is one), where the softmax and the window weighting happen too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

NODATA_CLASS = 255
MASK_LAYERS = ("QL_QUALITY_CLOUD",)
DEFAULT_TILE = 128
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}  # tiles per forward pass

# A qualitative palette (tab20 order, then a few more), RGB.
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
    (57, 59, 121),
    (99, 121, 57),
    (140, 109, 49),
    (132, 60, 57),
)


def colour_table(num_classes: int) -> dict[int, tuple[int, int, int, int]]:
    """Class -> RGBA; the nodata value is transparent black."""
    table = {k: (*PALETTE[k % len(PALETTE)], 255) for k in range(num_classes)}
    table[NODATA_CLASS] = (0, 0, 0, 0)
    return table


def cosine_window(tile: int) -> np.ndarray:
    """``[tile, tile]`` weights ``sin^2(pi (i + 0.5) / tile)`` per axis: > 0 everywhere."""
    w = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    return np.outer(w, w).astype(np.float32)


def tile_origins(size: int, tile: int, stride: int) -> list[int]:
    """Tile starts that cover ``0..size`` (the last tile ends at ``size``)."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _tiles(strip: np.ndarray, tile: int, xs: list[int]):
    """Tiles of a ``[C, tile, W]`` strip at columns ``xs`` (zero-padded where W < tile)."""
    c, h, w = strip.shape
    if h < tile or w < tile:
        padded = np.zeros((c, max(h, tile), max(w, tile)), dtype=strip.dtype)
        padded[:, :h, :w] = strip
        strip = padded
    return np.stack([strip[:, :tile, x : x + tile] for x in xs])


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when a GPU is visible, else ``cpu``; others as given."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but no CUDA device is visible")
    return str(device)


def sliding_window_probs(
    model,
    read_strip,
    height: int,
    width: int,
    num_classes: int,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    device: str = "cpu",
) -> np.ndarray:
    """Blended class probabilities ``[K, height, width]``.

    ``read_strip(row, rows)`` returns the normalised image rows ``row .. row + rows`` as
    float32 ``[C, rows, width]``; ``model`` maps ``[B, C, tile, tile]`` to logits
    ``[B, K, tile, tile]``. Tiles are gathered across strips into batches of
    ``batch_size``; the model, the softmax and the window weighting run on ``device``.
    """
    import torch

    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in 0..{tile - 1}, got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stride = tile - overlap
    window = cosine_window(tile)
    weight = torch.from_numpy(window).to(device)
    acc = np.zeros((num_classes, height, width), dtype=np.float32)
    wsum = np.zeros((height, width), dtype=np.float32)
    xs = tile_origins(width, tile, stride)
    pending: list[tuple[int, int, int, np.ndarray]] = []  # (y, x, rows, tile)

    def flush() -> None:
        batch = torch.from_numpy(np.stack([t for *_, t in pending])).to(device)
        with torch.no_grad():
            probs = torch.softmax(model(batch).float(), dim=1) * weight
        probs = probs.cpu().numpy()
        for p, (y, x, rows, _) in zip(probs, pending, strict=True):
            cols = min(tile, width - x)
            acc[:, y : y + rows, x : x + cols] += p[:, :rows, :cols]
            wsum[y : y + rows, x : x + cols] += window[:rows, :cols]
        pending.clear()

    for y in tile_origins(height, tile, stride):
        rows = min(tile, height - y)
        tiles = _tiles(read_strip(y, rows), tile, xs)
        for t, x in zip(tiles, xs, strict=True):
            pending.append((y, x, rows, t))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return acc / np.maximum(wsum, 1e-12)


def _scene_error(name: str, reason: str):
    from spectralearth.enmap.scene import ProductError

    return ProductError(name, reason)


def predict_scene(
    model: str | os.PathLike,
    scene: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    mask_layers: Sequence[str] = MASK_LAYERS,
) -> dict[str, Any]:
    """Map ``scene`` (L2A product folder/zip or generic image) with the trained ``model``
    (a folder of :mod:`spectralearth.models.heads`) to ``out`` (single-band uint8 GeoTIFF).

    ``tile`` defaults to the patch size the model was trained on, ``overlap`` to a quarter
    tile; ``device`` (``auto``/None: the GPU when there is one) and ``batch_size`` (tiles per
    forward pass; None: 8 on the CPU, 32 on a GPU) say where and how the model runs (params
    ``predict.device``, ``predict.batch_size``). A scene that cannot be read or matched to
    the 202-band view raises
    :class:`~spectralearth.enmap.scene.ProductError` naming it. Returns counts per class,
    masked pixels and timings.
    """
    import time

    import rasterio
    from rasterio.windows import Window

    from spectralearth.enmap.archive import scene_name
    from spectralearth.enmap.scene import NODATA
    from spectralearth.enmap.view import open_view
    from spectralearth.io import atomic_path
    from spectralearth.models.heads import SEGMENTATION, load_model

    t0 = time.perf_counter()
    net, info = load_model(model)
    if info["task"] != SEGMENTATION:
        raise ValueError(f"{model}: a {info['task']} model has no per-pixel classes to map")
    num_classes = int(info["num_classes"])
    if num_classes >= NODATA_CLASS:
        raise ValueError(f"{model}: {num_classes} classes do not fit a uint8 map")
    tile = int(tile or info.get("patch_size") or DEFAULT_TILE)
    overlap = tile // 4 if overlap is None else int(overlap)
    device = resolve_device(device)
    batch_size = int(batch_size or DEFAULT_BATCH["cuda" if device.startswith("cuda") else "cpu"])
    net = net.to(device)

    scene = Path(scene)
    name = scene_name(scene) if scene.exists() else scene.name
    if not scene.exists():
        raise _scene_error(name, f"no such scene: {scene}")
    # the catalogue's and curation's validation; a mask off the image grid is refused here
    view = open_view(scene, require_time=False)
    if len(view.bands) != int(info["in_chans"]):
        raise _scene_error(
            name, f"the scene view has {len(view.bands)} bands, the model takes {info['in_chans']}"
        )
    mean = np.asarray(info["band_stats"]["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(info["band_stats"]["std"], dtype=np.float32)[:, None, None]
    if len(mean) != len(view.bands):
        raise ValueError(f"{model}: band statistics have {len(mean)} bands, not {len(view.bands)}")
    profile = {"crs": view.grid.crs, "transform": view.grid.transform}
    height, width = view.grid.height, view.grid.width
    try:
        masked = np.zeros((height, width), dtype=bool)
        for layer in mask_layers:
            masked |= view.mask(layer)  # all False for a layer the scene does not carry
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise _scene_error(name, f"cannot be read: {exc}") from exc

    def read_strip(row: int, rows: int) -> np.ndarray:
        try:
            raw = view.read(Window(0, row, width, rows))
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise _scene_error(name, f"cannot be read at rows {row}..{row + rows}: {exc}") from exc
        nodata = np.any(raw == NODATA, axis=0)
        masked[row : row + rows] |= nodata
        x = (raw.astype(np.float32) - mean) / std
        x[:, nodata] = 0.0  # the band mean: nodata must not leak into neighbours' features
        return x

    t1 = time.perf_counter()
    probs = sliding_window_probs(
        net, read_strip, height, width, num_classes, tile, overlap, batch_size, device
    )
    t_infer = time.perf_counter() - t1
    classes = probs.argmax(axis=0).astype(np.uint8)
    classes[masked] = NODATA_CLASS

    out = Path(out)
    names = list(info.get("classes") or [str(k) for k in range(num_classes)])
    meta = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "height": height,
        "width": width,
        "nodata": NODATA_CLASS,
        "compress": "deflate",
        "tiled": width >= 256 and height >= 256,
        **profile,
    }
    if meta["tiled"]:
        meta.update(blockxsize=256, blockysize=256)
    with atomic_path(out) as tmp:
        with rasterio.open(tmp, "w", **meta) as dst:
            dst.write(classes, 1)
            dst.write_colormap(1, colour_table(num_classes))
            dst.set_band_description(1, "class")
            dst.update_tags(
                classes=json.dumps(dict(enumerate(names))),
                scene=name,
                model=str(info.get("model", "")),
                dataset=str(info.get("dataset", "")),
                protocol=str(info.get("protocol", "")),
                tile=str(tile),
                overlap=str(overlap),
            )
    counts = np.bincount(classes[~masked], minlength=num_classes)[:num_classes]
    return {
        "scene": name,
        "out": str(out),
        "height": height,
        "width": width,
        "tile": tile,
        "overlap": overlap,
        "tiles": expected_tiles(height, width, tile, overlap),
        "masked_pixels": int(masked.sum()),
        "class_pixels": {names[k]: int(c) for k, c in enumerate(counts)},
        "inference_seconds": t_infer,
        "seconds": time.perf_counter() - t0,
        "device": device,
        "batch_size": batch_size,
        "classes": names,
    }


def expected_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`sliding_window_probs` runs over a scene."""
    stride = tile - overlap
    return math.prod(len(tile_origins(n, tile, stride)) for n in (height, width))
