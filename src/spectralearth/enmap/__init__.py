"""Readers for EnMAP L2A products and generic hyperspectral images.

Modules, each importing only those above it (``tests/enmap/test_imports.py`` checks):

* :mod:`~spectralearth.enmap.scene` — the ``Scene`` protocol, ``Grid``, ``ProductError``,
  constants (``NODATA``, ``QL_LAYERS``, ...)
* :mod:`~spectralearth.enmap.values` — stored values -> int16 reflectance x 10000
* :mod:`~spectralearth.enmap.checks` — wavelengths, layer grids, georeferencing
* :mod:`~spectralearth.enmap.l2a` — the L2A product reader (strict METADATA.XML)
* :mod:`~spectralearth.enmap.generic` — any GeoTIFF/ENVI image with band wavelengths
* :mod:`~spectralearth.enmap.archive` — ``find_scenes``, ``newest_processings``,
  ``open_scene``, ``find_product_path``, ``scene_name``
* :mod:`~spectralearth.enmap.view` — ``open_view``: the one validation and the 202-band view
  the catalogue, curation and prediction use
"""
