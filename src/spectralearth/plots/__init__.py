"""Figures, one module per stage; what they show is computed by the stage's own module.

====================== ====================================== ================================
module                 figures                                numbers and tables (elsewhere)
====================== ====================================== ================================
:mod:`.catalogue`      ``coverage_map``, ``scene_quicklooks`` :mod:`spectralearth.catalog_table`
                                                              (``catalog_table_markdown``,
                                                              ``short_scene``)
:mod:`.patches`        ``rgb_quicklooks``, ``locations_map``  :mod:`spectralearth.patches.summary`
                                                              (``dataset_summary``)
:mod:`.pretraining`    ``loss_curve`` (says how to read it)
:mod:`.evaluation`     ``class_spectra``,
                       ``confusion_matrix_plot``,
                       ``per_class_bars``
:mod:`.maps`           ``class_map_png``
====================== ====================================== ================================

Every name that ``spectralearth.plots`` had is importable from here as before. matplotlib
is imported inside the functions (Agg backend): ``import spectralearth.plots`` stays light.
"""

from spectralearth.catalog_table import catalog_table_markdown, short_datatake, short_scene
from spectralearth.plots.catalogue import MAX_LABELS, STATUS_STYLE, coverage_map, scene_quicklooks
from spectralearth.plots.evaluation import class_spectra, confusion_matrix_plot, per_class_bars
from spectralearth.plots.maps import class_map_png
from spectralearth.plots.patches import locations_map, rgb_quicklooks
from spectralearth.plots.pretraining import loss_caption, loss_curve

__all__ = [
    "MAX_LABELS",
    "STATUS_STYLE",
    "catalog_table_markdown",
    "class_map_png",
    "class_spectra",
    "confusion_matrix_plot",
    "coverage_map",
    "locations_map",
    "loss_caption",
    "loss_curve",
    "per_class_bars",
    "rgb_quicklooks",
    "scene_quicklooks",
    "short_datatake",
    "short_scene",
]
