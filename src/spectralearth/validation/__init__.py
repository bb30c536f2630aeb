"""Data-quality gates: Great Expectations 1.x suites (``expectations/*.json``) on the curated
data.

Four suites, each run on a table derived from what is on disk (:mod:`.tables`):

============== ==================================== ===============================================
suite          table (one row per ...)              gate
============== ==================================== ===============================================
patches        patch file (``patch_table``, read    blocking: shape (202, P, P) with P =
               with rasterio)                       ``curate.patch_size``, int16, nodata tag
                                                    -32768, nodata pixels within
                                                    ``curate.max_nodata_frac``, no NaN, values in
                                                    [-1000, 16000], UTM CRS, 30 m pixels
patch_index    index row (``index_table``)          blocking: unique ids and (location, scene)
                                                    pairs, every location in one split,
                                                    ``curate`` valid/cloud/snow thresholds
band_drift     band (``band_drift_table``)          warning: per-band mean within
                                                    ``validate.max_band_drift_sigma`` reference
                                                    stds of the reference mean
multitemporal  location (``location_table``)        warning: share of locations seen by more than
                                                    one scene >= ``validate.min_multitemporal_share``
============== ==================================== ===============================================

The suite files are the whole contract: params.yaml thresholds are GX suite parameters
(``$PARAMETER``) filled at run time (:mod:`.suites`, :class:`.GateSettings`), and each
expectation says in ``meta.fix`` what to run when it fails, which a failing report prints
beside the expectation, its thresholds and the offending rows (:mod:`.report`).

Modules: :mod:`.settings` (what the gates read from params.yaml), :mod:`.suites` (loading
the suites), :mod:`.tables`, :mod:`.reference` (drift reference statistics), :mod:`.runner`
(one suite on one table), :mod:`.docs` (GX project and Data Docs of a report folder),
:mod:`.report` (results), :mod:`.gates` (the gates on a curated folder, explicit paths).

Entry points: :func:`quality_gates` (``spectralearth validate``), :func:`validate_scene`
(the per-scene check), :func:`index_gates` / :func:`validate_index` /
:func:`validate_warnings` (the index checks). Each reads only the curated folder and writes
only under the report folder it is given.
"""

from spectralearth.config import REFERENCE_ENV
from spectralearth.validation.docs import DOCS_SITE, build_data_docs, data_docs_index, gx_project
from spectralearth.validation.gates import (
    index_gates,
    quality_gates,
    validate_all_patches,
    validate_band_drift,
    validate_index,
    validate_multitemporal,
    validate_patch_index,
    validate_patches,
    validate_scene,
    validate_warnings,
)
from spectralearth.validation.reference import N_BANDS, Reference, load_reference, resolve_reference
from spectralearth.validation.report import (
    MAX_NAMED_ROWS,
    ExpectationResult,
    QualityGates,
    ValidationReport,
)
from spectralearth.validation.runner import validate_frame
from spectralearth.validation.settings import GateSettings
from spectralearth.validation.suites import (
    check_parameters,
    expectation_label,
    expectations_dir,
    load_suite_dict,
    parameter_names,
    suite_path,
)
from spectralearth.validation.tables import (
    NODATA,
    PATCH_COLUMNS,
    band_drift_table,
    dataset_band_means,
    index_table,
    location_table,
    patch_table,
)

__all__ = [
    "DOCS_SITE",
    "MAX_NAMED_ROWS",
    "NODATA",
    "N_BANDS",
    "PATCH_COLUMNS",
    "REFERENCE_ENV",
    "ExpectationResult",
    "GateSettings",
    "QualityGates",
    "Reference",
    "ValidationReport",
    "band_drift_table",
    "build_data_docs",
    "check_parameters",
    "data_docs_index",
    "dataset_band_means",
    "expectation_label",
    "expectations_dir",
    "gx_project",
    "index_gates",
    "index_table",
    "load_reference",
    "load_suite_dict",
    "location_table",
    "parameter_names",
    "patch_table",
    "quality_gates",
    "resolve_reference",
    "suite_path",
    "validate_all_patches",
    "validate_band_drift",
    "validate_frame",
    "validate_index",
    "validate_multitemporal",
    "validate_patch_index",
    "validate_patches",
    "validate_scene",
    "validate_warnings",
]
