"""Content hashes recorded for provenance (weights used, data seen)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_identity", "sha256_file", "sha256_text"]


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


def file_identity(path: str | Path | None) -> str | None:
    """"path@sha256:<16 hex>" of a small settings file (thresholds, --l3-csv), None when absent.

    Why: a resumed `sarco predict` compares its settings with the earlier run's; by path alone, an
    edited file's new cut-offs or L3 slices never reached the finished cases.
    """
    if path is None:
        return None
    try:
        return f"{path}@sha256:{sha256_file(path)[:16]}"
    except OSError:
        return None
