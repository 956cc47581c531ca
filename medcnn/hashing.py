"""SHA-256 of files: the one implementation behind every file hash medcnn records.

Model weights (the model hash in reports), imported checkpoints, validation inputs, training
cache keys and compiled-backend exports are all hashed here. Standard library only, so the
lean inference core (``tests/test_gpu_readiness.py``) can use it without pulling the report
layer (pandas) in.
"""

from __future__ import annotations

import hashlib
from os import PathLike

__all__ = ["file_sha256"]


def file_sha256(path: str | PathLike[str], *, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks of ``chunk_bytes``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            h.update(block)
    return h.hexdigest()
