"""Synthetic EnMAP L2A archive: the project's embedded default data.

Products in DLR's L2A layout (SPECTRAL_IMAGE, METADATA.XML, QL masks) simulated from
earthlib's measured spectra (Ryan et al., a global spectral library; 7,261 spectra), with
land-cover class maps as downstream labels. See :func:`write_archive`.
"""

from spectralearth.synth.archive import (
    CLASSMAP_SUFFIX,
    Acquisition,
    Place,
    classmap_path,
    plan_acquisitions,
    site_of,
    write_archive,
)
from spectralearth.synth.spectra import LANDCOVER_CLASSES, class_ids, load_library

__all__ = [
    "CLASSMAP_SUFFIX",
    "LANDCOVER_CLASSES",
    "Acquisition",
    "Place",
    "class_ids",
    "classmap_path",
    "load_library",
    "plan_acquisitions",
    "site_of",
    "write_archive",
]
