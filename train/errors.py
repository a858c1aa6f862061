"""Errors of the training side. The CLI prints ``USER_ERRORS`` as one line and exits 2."""

from __future__ import annotations


class TrainError(ValueError):
    """Base of every error train/ raises on purpose."""


class ConfigError(TrainError):
    """A run config is invalid; the message lists every problem at once."""


class BankMismatchError(TrainError):
    """The bank lacks a teacher/layer the config needs, or its fingerprint differs."""


class CheckpointError(TrainError):
    """A checkpoint cannot be read or does not fit the model asked for."""


class TrainingDiverged(TrainError):
    """The loss or the weights stopped being finite; nothing after that was checkpointed."""


USER_ERRORS: tuple[type[BaseException], ...] = (TrainError,)
