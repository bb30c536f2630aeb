"""The 202-band view: what curation and prediction read of an L2A product or a generic image."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from spectralearth.bands import view_wavelengths
from spectralearth.enmap.archive import find_scenes
from spectralearth.enmap.scene import QL_LAYERS, Scene
from spectralearth.enmap.view import open_view
from tests.helpers import POTSDAM_TILE, shared


def test_product_view_reads_202_bands_by_wavelength_with_its_masks(tiny_archive):
    view = open_view(find_scenes(tiny_archive)[0])
    assert isinstance(view.scene, Scene) and view.scene.source == "enmap_l2a"
    assert len(view.bands) == 202 and np.all(np.diff(view.wavelengths) > 0)
    np.testing.assert_allclose(view.wavelengths, view_wavelengths(), atol=5.0)
    part = view.read(Window(3, 5, 16, 8))
    assert part.shape == (202, 8, 16) and part.dtype == np.int16
    assert np.array_equal(part, view.scene.read(Window(3, 5, 16, 8), bands=view.bands))
    assert all(view.has_mask(q) for q in QL_LAYERS) and view.missing_masks == ()
    assert view.mask("QL_QUALITY_CLOUD", Window(0, 0, 16, 8)).shape == (8, 16)
    assert view.epsg == view.grid.crs.to_epsg() and view.notes == []


def test_generic_view_has_no_quality_layers_and_says_so():
    view = open_view(shared(*POTSDAM_TILE))
    assert isinstance(view.scene, Scene) and view.scene.source == "generic"
    assert len(view.bands) == 202 and not view.has_mask("QL_QUALITY_CLOUD")
    assert not view.mask("QL_QUALITY_CLOUD").any()
    assert view.mask("QL_QUALITY_CLOUD").shape == (view.grid.height, view.grid.width)
    assert any("no quality layers" in n for n in view.notes)


def test_an_unknown_policy_or_layer_is_an_error(tiny_archive):
    path = find_scenes(tiny_archive)[0]
    with pytest.raises(ValueError, match="missing_masks must be one of"):
        open_view(path, missing_masks="skip")
    with pytest.raises(ValueError, match="unknown quality layer CLOUDS"):
        open_view(path).mask("CLOUDS")
