"""Request validation: every malformed field is refused with its reason and a 4xx status."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from model.schema import parameter_names
from service.inputs import InputError, decode_image, parse_die, parse_metadata, parse_process_log

NAMES = parameter_names()


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def png() -> bytes:
    return encode(np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8))


def refused(call, *args, status: int = 422, match: str | None = None) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        call(*args)
    assert info.value.status == status
    return info.value


def test_a_valid_die_parses(png):
    log = json.dumps({NAMES[0]: 1.5, NAMES[1]: None, NAMES[2]: 3})
    meta = json.dumps({"fab": "A", "die_x": 3, "timestamp": "2026-11-01T08:00:00Z"})
    die = parse_die(png, log, "A-L1-W1-D1", "A-L1-W1", "  particles near edge ", meta, 2**20, 1.0)
    assert die.image.shape == (256, 256, 3) and die.image_format == "png"
    assert die.process == {NAMES[0]: 1.5, NAMES[2]: 3.0}
    assert NAMES[1] in die.missing_parameters and len(die.missing_parameters) == 46
    assert die.note == "particles near edge" and die.metadata["fab"] == "A"


def test_jpeg_is_accepted(png):
    pixels = np.full((256, 256, 3), 128, np.uint8)
    image, fmt = decode_image(encode(pixels, "JPEG"), 10**6)
    assert fmt == "jpeg" and abs(int(image.mean()) - 128) <= 2


@pytest.mark.parametrize(
    ("data", "status", "match"),
    [
        (b"", 422, "empty"),
        (b"not an image at all", 415, "not a PNG or JPEG"),
        (encode(np.zeros((128, 128, 3), np.uint8)), 422, "128x128, expected 256x256"),
        (encode(np.zeros((256, 256), np.uint8)), 422, "mode is L, expected RGB"),
        (encode(np.zeros((256, 256, 3), np.uint8), "BMP"), 415, "not a PNG or JPEG"),
        (encode(np.zeros((256, 256, 3), np.uint8), "GIF"), 415, "not a PNG or JPEG"),
    ],
)
def test_bad_images_are_refused(data, status, match):
    refused(decode_image, data, 10**6, status=status, match=match)


def test_a_truncated_image_is_refused(png):
    refused(decode_image, png[: len(png) // 2], 10**6, match="corrupt")


def test_an_oversized_image_is_refused(png):
    refused(decode_image, png, len(png) - 1, status=413, match="at most")


def test_a_decompression_bomb_is_refused():
    """A small file declaring a huge canvas is refused before any pixel is decoded."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")  # a few KB on disk, 400 Mpx declared
    error = refused(decode_image, buf.getvalue(), 10**7, status=413)
    assert "bomb" in error.reason


@pytest.mark.parametrize(
    ("text", "status", "match"),
    [
        ("{not json", 400, "not valid JSON"),
        ("[1, 2]", 400, "JSON object"),
        (json.dumps({"no_such_sensor": 1.0}), 422, "unknown parameters: no_such_sensor"),
        (json.dumps({NAMES[0]: "hot"}), 422, "not a number"),
        (json.dumps({NAMES[0]: True}), 422, "not a number"),
        ('{"' + NAMES[0] + '": NaN}', 422, "not a finite number"),
        ('{"' + NAMES[0] + '": Infinity}', 422, "not a finite number"),
    ],
)
def test_bad_process_logs_are_refused(text, status, match):
    refused(parse_process_log, text, status=status, match=match)


def test_an_empty_log_reports_every_parameter_missing():
    process, missing = parse_process_log("{}")
    assert process == {} and missing == NAMES


@pytest.mark.parametrize(("given", "share"), [(0, 0.5), (23, 0.5), (40, 0.1), (0, 0.99)])
def test_a_log_missing_too_many_parameters_is_refused_naming_them(png, given, share):
    log = json.dumps(dict.fromkeys(NAMES[:given], 1.0))
    error = refused(parse_die, png, log, "D1", "W1", "", "", 2**20, share, match="lacks")
    assert NAMES[-1] in error.reason and error.field == "process_log"
    assert f"{len(NAMES) - given} of {len(NAMES)}" in error.reason


def test_a_log_missing_up_to_the_share_is_a_die(png):
    log = json.dumps(dict.fromkeys(NAMES[:24], 1.0))
    assert len(parse_die(png, log, "D1", "W1").missing_parameters) == 24


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (json.dumps({"colour": "red"}), "unknown fields: colour"),
        (json.dumps({"fab": "Z"}), "expected one of"),
        (json.dumps({"die_x": "3"}), "expected int"),
        (json.dumps({"timestamp": "yesterday"}), "not ISO 8601"),
    ],
)
def test_bad_metadata_is_refused(text, match):
    refused(parse_metadata, text, match=match)


@pytest.mark.parametrize("die_id", ["", "   ", "a/b", "../etc", "x" * 200, "die id"])
def test_bad_ids_are_refused(png, die_id):
    refused(parse_die, png, "{}", die_id, "W1", match="die_id")


def test_overlong_notes_are_refused(png):
    refused(parse_die, png, "{}", "D1", "W1", "x" * 5000, match="operator_notes")
