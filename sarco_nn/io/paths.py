"""File names: which endings sarco reads, and names that are safe to print and to hand to SimpleITK."""

from __future__ import annotations

import os
from pathlib import Path

from sarco_nn.constants import IMAGE_SUFFIXES  # file endings SimpleITK reads for us; defined once
from sarco_nn.errors import InputError


def _image_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def printable_path(path: Path | str) -> str:
    """The path as text that can always be printed and written to UTF-8 files: bytes of a name
    that is not UTF-8 (Linux allows any) are shown as \\xNN escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _sitk_name(path: Path, where: Path | None = None) -> str:
    """The file name handed to SimpleITK/GDCM. A name that is not valid UTF-8 aborts the whole
    Python process inside SimpleITK (no exception), so it is refused here first."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"file name {printable_path(Path(name).name)} is not valid UTF-8", printable_path(where or path),
                         "rename the file (letters, digits, '_' and '-'), then run again") from None
    return name
