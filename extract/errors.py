"""Errors of extraction. ``USER_ERRORS`` are printed by the CLI as one line (exit 2)."""

from __future__ import annotations


class ExtractError(ValueError):
    """Base of every extraction error (a ValueError, so builtin-only callers still catch it)."""


class SpecError(ExtractError):
    """A teacher spec file is missing, unreadable or invalid (all problems listed at once)."""


class TeacherError(ExtractError):
    """A teacher cannot be loaded: missing folder, unknown plugin, remote code not allowed."""


class CorpusError(ExtractError):
    """A corpus input cannot be used at all (unknown kind, malformed manifest)."""


class AudioError(ExtractError):
    """One segment's audio is unusable (unreadable, corrupt, empty, too short, NaN).

    Recorded in the bank's ``errors.jsonl``; extraction goes on.
    """


class TooManyFailures(ExtractError):
    """More than ``--max-failed`` of the segments failed."""


USER_ERRORS: tuple[type[BaseException], ...] = (ExtractError,)
