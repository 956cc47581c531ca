"""Batch reports: tables (CSV/JSON), figures (PNG) and one self-contained HTML page, with
provenance (input hash of pixels + geometry, model SHA-256, settings hash).

Imports numpy, pandas and matplotlib (lazily, for figures) -- never torch.
"""

from __future__ import annotations

from medcnn.report.figures import overlay_png, volume_curve_png
from medcnn.report.html import render_html, write_html
from medcnn.report.provenance import HASH_METHOD, config_hash, environment_info, file_sha256, volume_hash
from medcnn.report.tables import TABLE_FILES, build_tables, jsonable, write_json, write_tables, write_text

__all__ = [
    "volume_hash",
    "config_hash",
    "file_sha256",
    "environment_info",
    "HASH_METHOD",
    "overlay_png",
    "volume_curve_png",
    "build_tables",
    "write_tables",
    "write_json",
    "write_text",
    "jsonable",
    "TABLE_FILES",
    "render_html",
    "write_html",
]
