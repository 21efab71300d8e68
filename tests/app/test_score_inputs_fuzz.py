"""Fuzzing the score mode's input reader (`inflow_jax.app.score_inputs.load_inputs`) with
hypothesis: an npz / npy file or a folder of images, of any dtype, rank, size, count and
corruption, named with the right, a wrong or no prefix, either becomes float32 images in [0, 1] at
the detector's size (with the folder's file paths) or raises a one-line `ScoreError` naming --input
and the source."""

import io
import pathlib
import struct
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from inflow_jax.app.score_inputs import ScoreError, load_inputs

CONFIG = {"data": {"data_dir": None, "image_size": 8}}
INPUT_SHAPE = (8, 8, 1)  # the native shape of the detector's training images
SHAPES = [(3, 8, 8, 1)] * 4 + [(2, 8, 8, 3), (1, 8, 8, 1), (3, 7, 9, 1), (3, 8, 8), (0, 8, 8, 1)]
DTYPES = ("uint8",) * 4 + ("float32", ">f8", "int16", "bool", "complex64", "<U1")


def _write_input(draw, folder: pathlib.Path):
  """(source string, number of images, their (H, W, C), whether load_inputs can read them (None: a
  flipped byte, maybe)): a drawn file or folder under `folder`, named with its prefix, another one
  or none."""
  kind = draw(st.sampled_from(["npz", "npy", "folder"]))
  shape = draw(st.sampled_from([s for s in SHAPES if kind != "folder" or len(s) == 4]))
  images = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 256, shape, np.uint8)
  dtype = "uint8" if kind == "folder" else draw(st.sampled_from(DTYPES))
  readable = dtype in ("uint8", "float32", ">f8", "int16") and len(shape) == 4
  path = folder / ("in" if kind == "folder" else f"in.{kind}")
  if kind == "folder":
    path.mkdir()
    for i, image in enumerate(images):
      Image.fromarray(image[..., 0] if shape[-1] == 1 else image).save(path / f"{i}.png")
    (path / "notes.txt").write_text("not an image")
  else:
    array = images > 0 if dtype == "bool" else images.astype(dtype)
    if dtype in ("float32", ">f8"):
      array = (images / 255.0).astype(dtype)
    buffer = io.BytesIO()
    if kind == "npy":
      np.save(buffer, array)
    else:
      np.savez(buffer, x=array)
    content = bytearray(buffer.getvalue())
    edit = draw(st.sampled_from([None] * 4 + ["cut", "flip"]))
    at, byte = draw(st.integers(0, 130)), draw(st.integers(0, 255))
    if edit == "cut":
      content = content[:at]
    elif edit == "flip":
      content[at] = byte
    path.write_bytes(bytes(content))
    readable = readable if edit is None else None if edit == "flip" else False
  prefix = draw(st.sampled_from([kind] * 5 + ["npz", "npy", "folder", ""]))
  source = f"{prefix}:{path}" if prefix else str(path)
  return source, len(images), shape[1:], readable if prefix == kind else False


@settings(max_examples=60, deadline=None)
@given(st.data(), st.booleans())
def test_load_inputs_fuzzed(draws, resize):
  with tempfile.TemporaryDirectory() as folder:
    source, count, shape, readable = _write_input(draws.draw, pathlib.Path(folder))
    try:
      x, paths = load_inputs(source, "test", CONFIG, INPUT_SHAPE, resize)
    except ScoreError as error:
      message = str(error)
      assert message.startswith(f"--input {source}") or message.startswith(f"--input {source!r}")
      assert "\n" not in message
      if readable and count:  # a readable input is refused for its count or size only
        assert count < 2 or (shape != INPUT_SHAPE and not resize), message
      return
  assert readable is not False and count >= 2 and (resize or shape == INPUT_SHAPE), source
  assert x.dtype == np.float32 and x.shape[1:] == (8, 8, 3) and len(x) >= 2
  assert x.min() >= 0 and x.max() <= 1
  assert (paths is None) == (not source.startswith("folder:")) and (
    paths is None or len(paths) == count
  )


def test_corrupt_inputs_are_score_errors(tmp_path):
  """Regression: a compressed npz whose deflate stream is broken (zlib.error) and a PNG whose header
  claims 20000 x 20000 pixels (PIL's DecompressionBombError) crashed the score mode with a
  traceback instead of its one-line error."""
  np.savez_compressed(tmp_path / "in.npz", x=np.zeros((3, 8, 8, 1), np.uint8))
  content = bytearray((tmp_path / "in.npz").read_bytes())
  name_length, extra_length = struct.unpack("<HH", content[26:30])  # the first local header
  content[30 + name_length + extra_length] = 0x07  # a deflate block of the reserved type
  (tmp_path / "in.npz").write_bytes(bytes(content))
  (tmp_path / "bomb").mkdir()
  header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
  chunk = lambda kind, body: (
    struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  )
  png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
  (tmp_path / "bomb" / "a.png").write_bytes(png)
  for source, message in [
    (f"npz:{tmp_path / 'in.npz'}", "invalid block type"),
    (f"folder:{tmp_path / 'bomb'}", "decompression bomb"),
  ]:
    with pytest.raises(ScoreError, match=rf"^--input '{source}': .*{message}"):
      load_inputs(source, "test", CONFIG, INPUT_SHAPE, False)
