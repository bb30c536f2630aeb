"""The 202-band view of a scene, as the catalogue, curation and prediction all open it.

:func:`open_view` is the one validation a scene passes before the pipeline uses it: the
reader's checks (:func:`~spectralearth.enmap.archive.open_scene`: XML, values, layers'
grids, footprint), then what the pipeline needs of any scene — north-up square 30 m pixels
in a projected EPSG CRS, bands matching the 202-band SpectralEarth view by wavelength
(:func:`spectralearth.bands.select_view`), an acquisition time, and its quality layers
(an L2A product missing some is refused unless ``missing_masks="ignore"``, which turns
those layers' filters off and logs it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from spectralearth.bands import BandMatchError, select_view
from spectralearth.enmap.archive import open_scene
from spectralearth.enmap.checks import check_georeferencing
from spectralearth.enmap.scene import MISSING_MASKS, QL_LAYERS, Grid, ProductError, Scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneView:
    """A validated scene seen through the 202-band view.

    ``bands``: file band indices (0-based) in view order; ``wavelengths``: the scene's
    centre wavelengths of those bands (nm). ``missing_masks``: quality layers the format
    carries that this scene lacks (their filters are off: only with
    ``missing_masks="ignore"``).
    """

    scene: Scene
    bands: np.ndarray
    wavelengths: np.ndarray
    grid: Grid
    epsg: int
    missing_masks: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.scene.name

    @property
    def scene_key(self) -> str:
        return self.scene.scene_key

    @property
    def start_time(self) -> datetime | None:
        return self.scene.meta.start_time

    @property
    def notes(self) -> list[str]:
        """What the reader decided and what is off, for the catalogue and the logs."""
        notes = list(self.scene.notes)
        if self.missing_masks:
            notes.append(
                f"quality layers missing, their filters off: {', '.join(self.missing_masks)}"
            )
        return notes

    def read(self, window: Window | None = None) -> np.ndarray:
        """int16 reflectance x 10000 ``[202, rows, cols]`` (nodata -32768), view order."""
        return self.scene.read(window, bands=self.bands)

    def has_mask(self, layer: str) -> bool:
        """True when ``layer`` is read from the scene (not missing, not absent by format)."""
        return layer in self.scene.ql_paths

    def mask(self, layer: str, window: Window | None = None) -> np.ndarray:
        """A quality layer as a boolean mask ``[rows, cols]`` on the image grid; all False
        for a layer the scene does not carry (a generic image, or missing and ignored)."""
        if layer not in QL_LAYERS:
            raise ProductError(self.name, f"unknown quality layer {layer}")
        if self.has_mask(layer):
            return self.scene.read_mask(layer, window)
        full = Window(0, 0, self.grid.width, self.grid.height)
        win = full if window is None else window.intersection(full)
        return np.zeros((int(round(win.height)), int(round(win.width))), dtype=bool)


def open_view(
    path: str | Path, *, missing_masks: str = "refuse", require_time: bool = True
) -> SceneView:
    """Open, validate and view a scene (see the module doc); raises :class:`ProductError`
    naming the scene and the reason. ``require_time=False`` (prediction) accepts a generic
    image without an acquisition time."""
    if missing_masks not in MISSING_MASKS:
        raise ValueError(f"missing_masks must be one of {MISSING_MASKS}, got {missing_masks!r}")
    scene = open_scene(path)
    try:
        epsg = check_georeferencing(scene.name, scene.grid)
        try:
            bands = select_view(scene.meta.wavelengths)
        except BandMatchError as exc:
            raise ProductError(
                scene.name, f"bands cannot be matched to the 202-band view: {exc}"
            ) from exc
        if require_time and scene.meta.start_time is None:
            raise ProductError(
                scene.name,
                "no acquisition time in the image's tags or header (add start_time): "
                "patches need one",
            )
        missing = tuple(q for q in scene.quality_layers if q not in scene.ql_paths)
        if missing and missing_masks == "refuse":
            raise ProductError(
                scene.name,
                f"quality layers missing: {', '.join(missing)} (curate.missing_masks: "
                "ignore curates without their filters)",
            )
    except ProductError:
        raise
    except Exception as exc:
        raise ProductError(scene.name, f"cannot be read: {type(exc).__name__}: {exc}") from exc
    if missing:
        log.warning("%s: quality layers missing, their filters off: %s", scene.name, missing)
    return SceneView(scene, bands, scene.meta.wavelengths[bands], scene.grid, epsg, missing)
