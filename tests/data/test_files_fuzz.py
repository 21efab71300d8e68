"""Fuzzing the readers of the user's files (`inflow_jax.data.files`, through `data.load_split`) with
hypothesis: .npy / .npz files of arrays of any dtype, rank, size and value range, corrupted
(flipped, cut or inserted bytes), and folders of PNG / JPEG / other files of any mode and size,
either load as uint8 NHWC images equal to what was stored or raise a ValueError naming the file."""

import io
import pathlib
import struct
import tempfile
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from inflow_jax import data

DTYPES = ("uint8", "int16", ">i4", "uint16", "float16", "float32", ">f4", ">f8", "bool")
ODD_DTYPES = ("complex64", "<U1", "datetime64[D]", "V2", [("a", "u1"), ("b", "u1")])
SHAPES = [(2, 4, 5, 3), (1, 3, 3, 1), (3, 5, 4, 3)] * 3
SHAPES += [(0, 4, 5, 3), (2, 0, 5, 1), (2, 4, 5, 2), (2, 4, 5), (1, 2, 4, 5, 3), ()]


def _array(draw) -> np.ndarray:
  """An array of a drawn shape and dtype whose values lie in the dtype's image range (mostly)."""
  shape = draw(st.sampled_from(SHAPES))
  dtype = np.dtype(draw(st.sampled_from(DTYPES * 3 + ODD_DTYPES)))
  values = np.random.default_rng(draw(st.integers(0, 999))).integers(0, 256, shape)
  if dtype.kind == "f":
    values = values / 255.0
  scale = draw(st.sampled_from([1] * 6 + [-1, 2, np.nan]))
  with np.errstate(invalid="ignore"):
    return (values * scale if dtype.kind in "iuf" else values).astype(dtype)


def _expected_images(array: np.ndarray):
  """The uint8 images load_split must return for a stored image array, or None: refused."""
  if array.dtype.kind not in "iuf" or array.ndim != 4 or array.shape[-1] not in (1, 3):
    return None
  if 0 in array.shape or not np.all(
    (array >= 0) & (array <= (1 if array.dtype.kind == "f" else 255))
  ):
    return None
  return (
    np.round(array * 255).astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8)
  )


def _load(source: str, path: pathlib.Path):
  """load_split(source): (images, labels), or the ValueError it raised, which must name the path."""
  try:
    return data.load_split(source, "test")
  except ValueError as error:
    assert str(path) in str(error), error
    return error


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_array_files_fuzzed(draws):
  array = _array(draws.draw)
  container = draws.draw(st.sampled_from(["npy", "x", "x_test", "single", "two", "labels"]))
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / ("a.npy" if container == "npy" else "a.npz")
    n = len(array) if array.ndim else 1
    labels = draws.draw(st.sampled_from([np.arange(n), np.arange(n + 1), np.zeros(n)]))
    if container == "npy":
      np.save(path, array)
    else:
      save = draws.draw(st.sampled_from([np.savez, np.savez_compressed]))
      arrays = {"x": {"x": array}, "x_test": {"x_test": array}, "single": {"other": array}}
      arrays.update(two={"a": array, "b": array}, labels={"x": array, "y": labels})
      save(path, **arrays[container])
    result = _load(f"{path.suffix[1:]}:{path}", path)
  expected = None if container == "two" else _expected_images(array)
  if container == "labels" and (labels.shape != (n,) or labels.dtype.kind != "i"):
    expected = None
  if expected is None:
    assert isinstance(result, ValueError), result
    return
  assert not isinstance(result, ValueError), result
  np.testing.assert_array_equal(result[0], expected)
  assert result[0].dtype == np.uint8 and (container == "labels") == (result[1] is not None)


def _stored_file(kind: str) -> bytes:
  buffer, images = io.BytesIO(), np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
  {"npy": np.save, "npz": np.savez, "npzc": np.savez_compressed}[kind](buffer, images)
  return buffer.getvalue()


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["npy", "npz", "npzc"]), st.data())
def test_corrupt_array_files_fuzzed(kind, draws):
  """Flipped, cut and inserted bytes (in the header most of the time): never another exception."""
  content = bytearray(_stored_file(kind))
  for _ in range(draws.draw(st.integers(1, 3))):
    end = draws.draw(st.sampled_from([160, len(content)]))
    at = draws.draw(st.integers(0, min(end, len(content)) - 1))
    edit = draws.draw(st.sampled_from(["flip", "cut", "insert"]))
    byte = draws.draw(st.integers(0, 255))
    if edit == "flip":
      content[at] = byte
    elif edit == "cut":
      content = content[:at] or bytearray(b"\x93")
    else:
      content[at:at] = bytes([byte])
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / f"a.{kind[:3]}"
    path.write_bytes(bytes(content))
    result = _load(f"{kind[:3]}:{path}", path)
  if not isinstance(result, ValueError):
    assert result[0].dtype == np.uint8 and result[0].ndim == 4 and result[0].shape[-1] in (1, 3)


def test_unreadable_array_files_name_the_file(tmp_path):
  """Regression: a deflate error in a compressed .npz (zlib.error), an unparsable .npy header
  (tokenize.TokenError, TypeError) and arrays of strings or records (numpy's UFuncTypeError) escaped
  unwrapped; an empty float array was 'not uint8' (TypeError) instead of empty."""
  header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 2, 3, }"
  for i, broken in enumerate([header, header.replace(b"'shape'", b"b'shape'")]):
    broken = broken.ljust(117) + b"\n"
    (tmp_path / f"{i}.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + broken)
    with pytest.raises(ValueError, match=rf"^cannot read {tmp_path / f'{i}.npy'} as a \.npy file"):
      data.load_split(f"npy:{tmp_path / f'{i}.npy'}", "test")
  np.savez_compressed(tmp_path / "c.npz", x=np.zeros((2, 2, 2, 3), np.uint8))
  content = bytearray((tmp_path / "c.npz").read_bytes())
  name_length, extra_length = struct.unpack("<HH", content[26:30])  # the first local header
  content[30 + name_length + extra_length] = 0x07  # a deflate block of the reserved type
  (tmp_path / "c.npz").write_bytes(bytes(content))
  with pytest.raises(zlib.error):
    np.load(tmp_path / "c.npz")["x"]
  with pytest.raises(ValueError, match=r"c\.npz as a \.npz file of images: .*invalid block type"):
    data.load_split(f"npz:{tmp_path / 'c.npz'}", "test")
  for name, array in [("s", np.full((2, 2, 2, 3), "a")), ("r", np.zeros((2, 2, 2, 3), "u1,u1"))]:
    np.savez(tmp_path / f"{name}.npz", x=array)
    with pytest.raises(ValueError, match=rf"{name}\.npz\['x'\]: images must be uint8.*got dtype"):
      data.load_split(f"npz:{tmp_path / f'{name}.npz'}", "test")
  np.save(tmp_path / "empty.npy", np.zeros((0, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match=r"empty\.npy\['array'\] must hold at least one non-empty"):
    data.load_split(f"npy:{tmp_path / 'empty.npy'}", "test")
  assert zipfile.is_zipfile(tmp_path / "c.npz")


MODES = ("L", "RGB", "RGBA", "P", "LA", "1", "I;16", "JPEG L", "JPEG RGB", "JPEG CMYK")
BROKEN = ("text", "empty", "cut", "bomb")  # contents no reader may accept, nor I;16 (16-bit)
SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".txt", "")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
  return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _file_bytes(content: str, size, seed: int):
  """(the bytes of a file of `content` at size (H, W), the pixels a PNG of mode L or RGB holds)."""
  if content in ("text", "empty"):
    return (b"not an image\n" if content == "text" else b""), None
  if content == "bomb":  # a header claiming 20000 x 20000 pixels
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""), None
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, size + (3,), dtype=np.uint8)
  mode = content.split()[-1] if content != "cut" else "RGB"
  if mode == "I;16":
    image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
  else:
    image = Image.fromarray(pixels).convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, "JPEG" if content.startswith("JPEG") else "PNG")
  raw = buffer.getvalue()
  stored = np.asarray(image) if content in ("L", "RGB") else None
  return (raw[: len(raw) // 2] if content == "cut" else raw), stored


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_folders_fuzzed(draws):
  """Folders of 1-4 files of any suffix, mode, size or corruption: the images, or a ValueError
  naming the first bad image file, or saying that there is none or that the sizes differ."""
  count = draws.draw(st.integers(1, 4))
  suffixes = [draws.draw(st.sampled_from(SUFFIXES[:3] * 3 + SUFFIXES[3:])) for _ in range(count)]
  contents = [draws.draw(st.sampled_from(MODES * 3 + BROKEN)) for _ in range(count)]
  sizes = [draws.draw(st.sampled_from([(8, 8)] * 4 + [(7, 9)])) for _ in range(count)]
  with tempfile.TemporaryDirectory() as name:
    folder, stored = pathlib.Path(name), []
    for i, (suffix, content, size) in enumerate(zip(suffixes, contents, sizes)):
      raw, pixels = _file_bytes(content, size, i)
      (folder / f"{i}{suffix}").write_bytes(raw)
      stored.append(pixels)
    result = _load(f"folder:{folder}", folder)
  images = [i for i, suffix in enumerate(suffixes) if suffix.lower() in (".png", ".jpg", ".jpeg")]
  bad = [i for i in images if contents[i] in BROKEN + ("I;16",)]
  if not images or bad:
    assert isinstance(result, ValueError), result
    assert f"{bad[0]}{suffixes[bad[0]]}" in str(result) if bad else "holds no" in str(result)
  elif len({sizes[i] for i in images}) > 1:
    assert isinstance(result, ValueError) and "differ in size" in str(result), result
  else:
    gray = all(contents[i] in ("L", "JPEG L") for i in images)
    assert result[0].shape == (len(images),) + sizes[images[0]] + ((1,) if gray else (3,))
    for k, i in enumerate(images):
      if stored[i] is not None:
        expected = stored[i][..., None] if stored[i].ndim == 2 else stored[i]
        np.testing.assert_array_equal(result[0][k], np.broadcast_to(expected, result[0][k].shape))


def test_sixteen_bit_and_oversized_images_are_refused(tmp_path):
  """Regression: a 16-bit grayscale PNG was clipped to 255 (silently wrong images), and a PNG whose
  header claims 20000 x 20000 pixels raised PIL's DecompressionBombError."""
  for content, message in [("I;16", r"has mode 'I;16'.*8 bits"), ("bomb", "decompression bomb")]:
    folder = tmp_path / content.replace(";", "")
    folder.mkdir()
    (folder / "a.png").write_bytes(_file_bytes(content, (8, 8), 0)[0])
    with pytest.raises(ValueError, match=rf"{folder / 'a.png'}.*{message}"):
      data.load_split(f"folder:{folder}", "test")
