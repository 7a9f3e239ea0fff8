"""Exception types with messages that name the file, record and field at fault."""

from __future__ import annotations


class HumanVisionError(Exception):
    """Base class of every error humanvision raises on purpose."""


class DataError(HumanVisionError, ValueError):
    """Malformed input data: names the file, the record (annotation / result / sample id) and the field.

    >>> DataError("bad value", file="gt.json", record="annotation 7", field="keypoints")
    DataError('gt.json: annotation 7: field keypoints: bad value')
    """

    def __init__(self, message: str, *, file: str | None = None, record: str | None = None,
                 field: str | None = None) -> None:
        self.file, self.record, self.field = file, record, field
        parts = [p for p in (file, record, f"field {field}" if field else None) if p]
        super().__init__(": ".join(parts + [message]))


class ConfigError(HumanVisionError, ValueError):
    """An invalid configuration: unknown key, wrong type, missing file. Names the key (``train.lr``) or file."""


class TrainingError(HumanVisionError, RuntimeError):
    """Training cannot continue (e.g. a NaN loss); names the step and the last good checkpoint."""
