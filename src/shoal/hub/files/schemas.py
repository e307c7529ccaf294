"""Wire models of the file API (JSON bodies and answers)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["file", "dir", "symlink"]
PathText = str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Residency(_Model):
    """Where the content is: always whole on the hub once committed; devices that have seen it."""

    on_hub: bool = True
    acked_by: list[str] = Field(default_factory=list)


class FileMeta(_Model):
    path: str
    kind: Kind
    seq: int = Field(description="the change that made this version (its cursor in the arena's log)")
    size: int
    hash: str | None = Field(None, description="BLAKE3-256 of the whole file, hex (files only)")
    mode: int
    mtime_ns: int
    device: str
    time: float
    chunks: int = 0
    target: str | None = None
    residency: Residency = Field(default_factory=Residency)


class ListItem(_Model):
    name: str
    path: str
    kind: Kind
    size: int = 0
    seq: int | None = Field(None, description="absent for a folder known only from what is inside it")
    mtime_ns: int = 0


class Listing(_Model):
    path: str
    items: list[ListItem]
    next_after: str | None = Field(None, description="pass as `after` for the next page; null on the last")


class PathBody(_Model):
    path: str = Field(min_length=1, max_length=4096)


class RenameBody(_Model):
    from_path: str = Field(min_length=1, max_length=4096, alias="from")
    to_path: str = Field(min_length=1, max_length=4096, alias="to")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RestoreBody(_Model):
    path: str = Field(min_length=1, max_length=4096)
    seq: int = Field(ge=1)


class WriteResult(_Model):
    """The log entries a write appended (``first``..``last``) and the arena cursor after it."""

    first: int
    last: int
    cursor: int
    conflicts: int = 0


class UploadCreate(_Model):
    path: str = Field(min_length=1, max_length=4096)
    mode: int = Field(0o644, ge=0, le=0o7777)
    mtime_ns: int | None = Field(None, ge=0)
    base_seq: int | None = Field(
        None, ge=0, description="refuse the commit (409) unless the path is still at this version (0: absent)"
    )


class Upload(_Model):
    id: str
    path: str
    parts: dict[int, int] = Field(default_factory=dict, description="part number -> bytes received")
    max_part_bytes: int
    expires_at: float


class UploadCommitted(_Model):
    file: FileMeta
    cursor: int
