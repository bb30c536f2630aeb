"""Synthetic EnMAP L2A archive: the project's embedded default data.

Products in DLR's L2A layout (SPECTRAL_IMAGE, METADATA.XML, QL masks) simulated from
earthlib's measured spectra (Ryan et al., a global spectral library; 7,261 spectra), with
land-cover class maps as downstream labels. See :func:`write_archive`.
"""

from spectralearth.synth.archive import classmap_path, write_archive
from spectralearth.synth.spectra import LANDCOVER_CLASSES, class_ids, load_library

__all__ = ["LANDCOVER_CLASSES", "class_ids", "classmap_path", "load_library", "write_archive"]
