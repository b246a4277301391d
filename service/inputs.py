"""Turning the fields of an inspection request into a DieInput, or an InputError saying why.

Pure functions with no web framework in them: the API maps InputError to its status code.
"""

from __future__ import annotations

import io
import json
import math
import re
from datetime import datetime

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.contract import ImageFormatError
from model.schema import FABS, IMAGE_SIZE, SHIFTS, WAFER_ZONES, parameter_names
from service.records import DieInput

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg"}
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_NOTE_CHARS = 2000
MAX_FIELD_CHARS = 128
METADATA_FIELDS = {
    "lot_id": str,
    "fab": str,
    "chamber": str,
    "shift": str,
    "die_x": int,
    "die_y": int,
    "wafer_zone": str,
    "timestamp": str,
}
CHOICES = {"fab": FABS, "shift": SHIFTS, "wafer_zone": WAFER_ZONES}


class InputError(ValueError):
    """A request the service refuses; `status` is the HTTP status that says so."""

    def __init__(self, reason: str, status: int = 422, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.field = reason, status, field


def parse_die(
    image_bytes: bytes,
    process_log: str,
    die_id: str,
    wafer_id: str,
    operator_notes: str | None = None,
    metadata: str | None = None,
    max_image_bytes: int = 2 * 1024 * 1024,
    max_missing_share: float = 0.5,
) -> DieInput:
    """Validate every field of one inspection request.

    Raises:
        InputError: the first field that is wrong, with the reason and a status code.
    """
    image, fmt = decode_image(image_bytes, max_image_bytes)
    process, missing = parse_process_log(process_log)
    note = (operator_notes or "").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise InputError(f"operator_notes has {len(note)} characters, at most {MAX_NOTE_CHARS}")
    die_id, wafer_id = check_id(die_id, "die_id"), check_id(wafer_id, "wafer_id")
    meta = parse_metadata(metadata)
    refuse_mostly_missing(missing, max_missing_share)
    return DieInput(
        die_id=die_id,
        wafer_id=wafer_id,
        image=image,
        image_bytes=image_bytes,
        image_format=fmt,
        process=process,
        missing_parameters=missing,
        note=note,
        metadata=meta,
    )


def check_id(value: str, name: str) -> str:
    """A die or wafer id: 1-128 letters, digits, '.', '_' or '-'."""
    value = (value or "").strip()
    if not ID_PATTERN.match(value):
        raise InputError(
            f"{name} {value[:40]!r} must be 1-128 letters, digits, '.', '_' or '-'", field=name
        )
    return value


def decode_image(data: bytes, max_bytes: int) -> tuple[np.ndarray, str]:
    """A 256x256 RGB PNG or JPEG as uint8 (256, 256, 3), and its format name."""
    if not data:
        raise InputError("image is empty", field="image")
    if len(data) > max_bytes:
        raise InputError(f"image has {len(data)} bytes, at most {max_bytes}", 413, "image")
    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as img:
            fmt = IMAGE_FORMATS[img.format]
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                w, h = img.size
                raise ImageFormatError(f"image is {w}x{h}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
            if img.mode != "RGB":
                raise ImageFormatError(f"image mode is {img.mode}, expected RGB")
            img.load()
            return np.asarray(img, np.uint8), fmt
    except ImageFormatError as err:
        raise InputError(str(err), field="image") from err
    except Image.DecompressionBombError as err:
        raise InputError("image is a decompression bomb", 413, "image") from err
    except UnidentifiedImageError as err:
        raise InputError("image is not a PNG or JPEG file", 415, "image") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"image is corrupt ({type(err).__name__})", field="image") from err


def parse_process_log(text: str) -> tuple[dict[str, float], tuple[str, ...]]:
    """The process log JSON object as {name: value} and the names it lacks.

    A null value is a sensor dropout (missing). Unknown names, non-numeric and non-finite
    values are refused.
    """
    try:
        values = json.loads(text)
    except (json.JSONDecodeError, TypeError) as err:
        raise InputError(f"process_log is not valid JSON: {err}", 400, "process_log") from err
    if not isinstance(values, dict):
        raise InputError("process_log must be a JSON object of parameter values", 400)
    names = parameter_names()
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InputError(f"process_log has unknown parameters: {', '.join(unknown[:10])}")
    process = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"process_log {name} is {value!r}, not a number", field=name)
        if not math.isfinite(value):
            raise InputError(f"process_log {name} is {value}, not a finite number", field=name)
        process[name] = float(value)
    missing = tuple(n for n in names if n not in process)
    return process, missing


def refuse_mostly_missing(missing: tuple[str, ...], max_share: float) -> None:
    """An InputError naming the missing parameters when more than `max_share` are missing
    (such a log does not describe a die)."""
    total = len(parameter_names())
    if len(missing) > max_share * total:
        raise InputError(
            f"process_log lacks {len(missing)} of {total} parameters (at most "
            f"{max_share:.0%} may be missing): {', '.join(missing)}",
            field="process_log",
        )


def parse_metadata(text: str | None) -> dict:
    """Optional station metadata (lot, fab, chamber, shift, die position, zone, timestamp)."""
    if not text or not text.strip():
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"metadata is not valid JSON: {err}", 400, "metadata") from err
    if not isinstance(values, dict):
        raise InputError("metadata must be a JSON object", 400, "metadata")
    unknown = sorted(set(values) - set(METADATA_FIELDS))
    if unknown:
        raise InputError(f"metadata has unknown fields: {', '.join(unknown)}", field="metadata")
    for name, value in values.items():
        kind = METADATA_FIELDS[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InputError(f"metadata {name} is {value!r}, expected {kind.__name__}")
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            limit = MAX_FIELD_CHARS
            raise InputError(f"metadata {name} has {len(value)} characters, at most {limit}")
        if name in CHOICES and value not in CHOICES[name]:
            raise InputError(f"metadata {name} is {value!r}, expected one of {CHOICES[name]}")
    if "timestamp" in values:
        try:
            datetime.fromisoformat(values["timestamp"].replace("Z", "+00:00"))
        except ValueError as err:
            raise InputError(f"metadata timestamp {values['timestamp']!r} is not ISO 8601") from err
    return values
