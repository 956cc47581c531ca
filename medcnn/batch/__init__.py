"""Many cases: listing (files, folders, globs, DICOM, manifests), failure isolation,
resume, local process pools and Dask clusters, and the batch report.

Importing this package does not import torch; the model is loaded when the first case runs.
"""

from __future__ import annotations

from medcnn.batch.bundles import BundleInfo, bundle_info, bundled_names, list_bundles, resolve_model
from medcnn.batch.cases import Case, CaseInput, discover_cases, read_manifest, safe_case_id
from medcnn.batch.execute import BatchResult, resolve_mode, run_batch, write_report
from medcnn.batch.runner import MODES, RESULT_FILE, BatchSettings, case_dir, run_case
from medcnn.report.provenance import volume_hash

__all__ = [
    "run_batch",
    "BatchResult",
    "BatchSettings",
    "run_case",
    "write_report",
    "resolve_mode",
    "MODES",
    "RESULT_FILE",
    "case_dir",
    "Case",
    "CaseInput",
    "discover_cases",
    "read_manifest",
    "safe_case_id",
    "BundleInfo",
    "bundle_info",
    "bundled_names",
    "list_bundles",
    "resolve_model",
    "volume_hash",
]
