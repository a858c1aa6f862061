"""Errors of the bank. Every one names what it is about (bank, shard, segment, file)."""

from __future__ import annotations


class BankError(ValueError):
    """Base of every bank error; a ValueError so callers that only know builtins still catch it."""


class SchemaError(BankError):
    """The catalog is of an unknown or newer schema, or is not an audistill catalog at all."""


class CatalogError(BankError):
    """The catalog is missing, unreadable, or disagrees with itself."""


class UnsafeKeyError(BankError):
    """A segment id / teacher name / field name is not safe as a tar or WebDataset key."""


class CodecError(BankError):
    """An unknown codec, a bad codec configuration, or data a codec cannot hold."""


class ShardError(BankError):
    """A shard is broken: truncated, corrupted, incomplete, or not what the catalog says."""

    def __init__(self, message: str, *, shard: str | None = None, segment: str | None = None):
        where = []
        if shard is not None:
            where.append(f"shard {shard!r}")
        if segment is not None:
            where.append(f"segment {segment!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.message = (
            message  # without the shard and segment (to say them once when re-raised with more)
        )
        self.shard = shard
        self.segment = segment


class MissingDataError(BankError):
    """The bank lacks a teacher, layer or segment that was asked for."""


class UnsafePathError(BankError):
    """A path built from ids or keys would leave the bank root."""


class BusyError(BankError):
    """Another live run holds what this one needs (a shard being written, the catalog) for too
    long."""


class StorageError(BankError):
    """The bank's store failed: unreachable, credentials refused, or an object the bank names is
    gone."""
