"""Fuzzing `inflow_jax.data.preprocess` with hypothesis: uint8 NHWC images of any size with 1 or 3
channels, in any memory layout, become float32 (N, S, S, 3) in [0, 1], the same as from their
contiguous copy; every other dtype, rank, channel count, empty batch or image, and every bad
image_size / center_crop is refused with a ValueError / TypeError naming it."""

import numpy as np
import pytest
from fuzzing import check_error, relayout
from hypothesis import given, settings
from hypothesis import strategies as st

from inflow_jax import data

BAD = {  # a part of the call -> its invalid values
  "n": [0],
  "h": [0],
  "c": [0, 2, 4],
  "rank": [3, 5],
  "dtype": ["int32", ">i4", "float32", ">f4", "bool", "object", "complex64"],
  "size": [0, -1, 2.5, "8", None, True],
  "crop": [0, -1, 99, 2.5, "4", False],
}


@st.composite
def calls(draw):
  """(images, image_size, center_crop): valid, or (half of the time) with one part invalid; the
  images in a drawn memory layout."""
  defect = draw(st.sampled_from([None] * 7 + list(BAD)))
  part = lambda name, valid: draw(st.sampled_from(BAD[name] if defect == name else valid))
  shape = [part("n", [1, 2]), part("h", list(range(1, 10))), draw(st.integers(1, 9))]
  shape.append(part("c", [1, 3]))
  shape = {3: shape[1:], 4: shape, 5: [1] + shape}[part("rank", [4])]
  images = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, shape)
  images = images.astype(part("dtype", ["uint8"]))
  images = relayout(
    images, draw(st.sampled_from(["contiguous", "fortran", "transposed", "strided"]))
  )
  image_size = part("size", [1, 4, 8, 9, np.int64(6)])
  smallest = min(shape[1:3]) if len(shape) == 4 else 1
  center_crop = part("crop", [None, None, smallest, np.int32(1)])
  return images, image_size, center_crop


def _is_integer(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _expected_error(images, image_size, center_crop):
  """The first problem preprocess must name, or None for a valid call."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    return ValueError, r"^images must have shape \(N, H, W, C\) with C = 1 or 3"
  if images.dtype != np.uint8:
    return TypeError, "^images must be uint8"
  if 0 in images.shape:
    return ValueError, "^images must hold at least one non-empty image"
  if not _is_integer(image_size) or image_size < 1:
    return ValueError, "^image_size must be a positive integer"
  if center_crop is not None and not (
    _is_integer(center_crop) and 0 < center_crop <= min(images.shape[1:3])
  ):
    return ValueError, "^center_crop must be an integer in"
  return None


@settings(max_examples=120, deadline=None)
@given(calls())
def test_preprocess_fuzzed(call_args):
  images, image_size, center_crop = call_args
  expected = _expected_error(images, image_size, center_crop)
  call = lambda: data.preprocess(images, image_size, center_crop)
  if expected is not None:
    name = expected[1].split()[0].lstrip("^")
    check_error(call, expected, name)
    return
  x = call()
  assert x.dtype == np.float32 and x.shape == (len(images), image_size, image_size, 3)
  assert x.min() >= 0 and x.max() <= 1
  np.testing.assert_array_equal(
    x, data.preprocess(np.ascontiguousarray(images), image_size, center_crop)
  )
  if center_crop is None and images.shape[1:3] == (image_size, image_size):
    np.testing.assert_array_equal(x, np.broadcast_to(images * np.float32(1 / 255), x.shape))


def test_non_integer_sizes_and_crops_are_refused():
  """Regression: center_crop=2.5 or "4" crashed with a TypeError from slicing or comparing that
  named neither, and image_size=True resized every image to 1x1."""
  images = np.zeros((2, 8, 8, 3), np.uint8)
  for crop in (2.5, "4", True):
    with pytest.raises(ValueError, match=r"^center_crop must be an integer in \[1, 8\]"):
      data.preprocess(images, 8, crop)
  with pytest.raises(ValueError, match="^image_size must be a positive integer, got True"):
    data.preprocess(images, True)
