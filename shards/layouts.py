"""Shard layouts behind one interface, found by name in a registry.

A layout decides how one shard's fields become files under ``shards/``; the bank (commits,
catalog, verify, info) reaches them only through :class:`Layout`. A new layout is one module
that defines a :class:`Layout` and calls :func:`register_layout` when imported (the built-in
ones are imported on first look-up).

Conventions every layout keeps (the bank's recovery relies on them):

- a shard's files are named ``shards/SHARD.*`` or lie under ``shards/SHARD.*/`` (shard names
  hold no dots), so the shard a file belongs to is the name before the first dot;
- everything written before the commit has ``.tmp-`` in one of its path components, and nothing
  committed has (:func:`audistill.shards.recovery.remove_temporaries` finds them that way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from .errors import CatalogError

if TYPE_CHECKING:  # the protocols only name them; the registry stays importable without numpy/torch
    import numpy as np

    from .fields import FieldSpec
    from .fs import BankFS
    from .segments import Segment

# the built-in layouts' names (a layout module registers its own; type checkers see these)
LayoutName = Literal["zarr", "webdataset"]
FileEntries = dict[str, dict]  # bank-relative path -> {"bytes", "sha256"}


class ShardWriter(Protocol):
    """Writes one new shard under temporary names; the bank commits it and then sets the
    writer's ``record`` to the shard's commit record."""

    segments: list[Segment]

    def add(
        self, segment: Segment, audio: np.ndarray | None, features: dict[str, dict | None]
    ) -> None:
        """One segment: its int16 audio and ``{teacher: {layer: parts} | None}``."""

    def close(self) -> dict[str, tuple[int, int]]:
        """Finish writing; ``{field: (segments covered, frames)}`` (the audio field's frames: see
        :meth:`num_samples`)."""

    def num_samples(self) -> int:
        """The shard's audio samples, as its catalog entry records them (after :meth:`close`)."""

    def layer_bytes(self) -> dict[str, dict[str, int]]:
        """``{field: {"LAYER": stored bytes}}`` for the fields whose per-layer bytes the layout
        counts as it writes; a field absent here gets them from its files
        (:meth:`Layout.layer_bytes_from_files`)."""

    def commit(self) -> FileEntries:
        """Move every file to its final name; every final file with its size and sha256."""

    def abort(self) -> None:
        """Remove what was written (the write failed)."""


class FieldAdder(Protocol):
    """Writes one new field of a committed shard under temporary names; the bank commits it and
    then sets the adder's ``record`` to the shard's updated commit record."""

    def add(self, segment: Segment, layers: dict | None) -> None:
        """The next segment's ``{layer: parts}``, or None where the teacher did not cover it."""

    def close(self) -> tuple[int, int]:
        """Finish writing; (segments covered, frames). Refuses a field of the wrong length."""

    def layer_bytes(self) -> dict[str, int] | None:
        """``{"LAYER": stored bytes}``, or None: from the files (see ShardWriter.layer_bytes)."""

    def commit(self) -> FileEntries:
        """As :meth:`ShardWriter.commit`, for the new field's files."""

    def abort(self) -> None:
        """Remove what was written."""


class ShardReader(Protocol):
    """Reads one committed shard (see :class:`audistill.shards.fields.LayerDecoder`)."""

    segments: list[Segment]

    def covered(self, fname: str, i: int) -> bool: ...
    def num_frames(self, fname: str, i: int) -> int: ...
    def read_audio(self, i: int, start: int = 0, num: int | None = None) -> np.ndarray: ...
    def read_parts(
        self, fname: str, layer: int, i: int, lo: int = 0, hi: int | None = None
    ) -> dict[str, np.ndarray]: ...
    def read_layer(
        self,
        fname: str,
        layer: int,
        i: int,
        f0: int = 0,
        nf: int | None = None,
        state: dict | None = None,
    ) -> np.ndarray: ...


class Layout(Protocol):
    """One way of storing shards: what the bank needs of it, and nothing else."""

    name: str

    def writer(self, fs: BankFS, shard: str, fields: list[FieldSpec]) -> ShardWriter:
        """A writer of new shard ``shard`` holding ``fields``."""

    def field_adder(self, fs: BankFS, shard: str, spec: FieldSpec, num_segments: int) -> FieldAdder:
        """A writer of field ``spec`` of committed shard ``shard`` (of ``num_segments``)."""

    def reader(
        self, fs: BankFS, shard: str, field_names: list[str], files: FileEntries | None = None
    ) -> ShardReader:
        """A reader of committed shard ``shard`` (``field_names``: its fields, from its record).
        ``files`` (the commit record's file list): the metadata the reader reads is checked against
        its sha256 (a same-size change would otherwise be read as it is)."""

    def listed_sizes(self, fs: BankFS, shard: str) -> dict[str, int]:
        """Sizes of the shard's files from as few listings as the layout allows (one on an object
        store); files absent here are asked one by one."""

    def remove_uncommitted(self, fs: BankFS, shard: str, fields: list[FieldSpec]) -> None:
        """Remove what an earlier, crashed writer of new shard ``shard`` may have left under its
        final names (``fields``: the ones this write makes)."""

    def field_of_file(self, shard: str, rel: str) -> str | None:
        """The field a bank-relative file of ``shard`` belongs to; None: a shard-level file."""

    def layer_bytes_from_files(
        self, shard: str, field: str, layers: list[int], files: FileEntries
    ) -> dict[str, int] | None:
        """``{"LAYER": stored bytes}`` of a field, from the shard's file list; None: the file
        list does not tell (:meth:`layer_bytes_stored` reads it from the shard)."""

    def layer_bytes_stored(
        self, fs: BankFS, shard: str, field: str, layers: list[int]
    ) -> dict[str, int]:
        """``{"LAYER": stored bytes}`` of a field, read from the shard itself."""

    def in_shard_container(self, shard: str, rel: str) -> bool:
        """Whether ``rel`` lies inside the shard's own folder (a file there that the commit
        record lacks is an extra file of a committed shard, not a crashed writer's leftover)."""


_LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    """Make ``layout`` available by its name (called by each layout module as it is imported)."""
    _LAYOUTS[layout.name] = layout
    return layout


def _load_builtin() -> None:
    from . import layout_wds, layout_zarr  # noqa: F401 - they register themselves


def layout_names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(_LAYOUTS)


def get_layout(name: str) -> Layout:
    """The layout called ``name``; CatalogError naming the known ones if there is none."""
    _load_builtin()
    try:
        return _LAYOUTS[name]
    except KeyError:
        raise CatalogError(f"unknown layout {name!r}; use one of {tuple(_LAYOUTS)}") from None


def file_entries(fs: BankFS, paths: dict[str, str], known: FileEntries) -> FileEntries:
    """``{final path: {"bytes", "sha256"}}`` for ``paths`` (``{final path: where the file is
    now}``). Files a writer hashed as it wrote them (``known``, by final path) are not read
    back: on object storage that would download the shard again."""
    return {
        final: known.get(final) or {"bytes": fs.size(now), "sha256": fs.sha256(now)}
        for final, now in paths.items()
    }
