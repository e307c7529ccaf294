"""What a path is on disk or in the log: the one vocabulary the sync layers share."""

from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
