"""Issue 30, items 5, 7 and 8 for predict-image: a huge image is refused from its
header, a FIFO is not opened, and file names are printed escaped.

Every hostile file is made here, in a temporary folder.
"""
import io
import os
import struct
import time
import zlib

import pytest
from PIL import Image

from pipeline.commands import predict_image
from pipeline.errors import PipelineError
from pipeline.images import prepare


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height: what a decompression bomb shows
    before its pixels are decoded."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    struct.pack_into(">II", raw, 16, width, height)                 # IHDR's data starts at 16
    struct.pack_into(">I", raw, 29, zlib.crc32(bytes(raw[12:29])))   # its CRC
    return bytes(raw)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_past_the_pixel_cap_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(13000, 13000))
    started = time.monotonic()
    with pytest.raises(PipelineError) as caught:
        prepare.read_grey(path)
    assert time.monotonic() - started < 1
    assert str(caught.value) == (f"{path}: too large: expected an image of at most "
                       f"{prepare.MAX_PIXELS:,} pixels, found 13000 x 13000")
    assert prepare.MAX_PIXELS < Image.MAX_IMAGE_PIXELS


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "seven.png"
    os.mkfifo(fifo)                              # opening it would wait for a writer
    (found,) = predict_image._prepare([fifo])
    assert str(found) == f"{fifo}: expected an image file, found a named pipe (FIFO)"


def test_file_names_are_printed_escaped():
    line = predict_image.describe("seven\x1b[2J\rerror: forged.png", [(7, 0.99), (1, 0.01)])
    assert "\x1b" not in line and "\r" not in line
    assert line.startswith("seven\\x1b[2J\\rerror: forged.png: 7 (99.0%)")
