"""Content hashes recorded for provenance (weights used, data seen)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file", "sha256_text"]


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks so multi-GB checkpoints never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """SHA-256 of UTF-8 text (e.g. a sorted file list: which data a model saw, without listing it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

