"""Hypothesis strategies shared by the fuzz tests (`tests/*/test_*_fuzz.py`), imported as
`from fuzzing import ...` (tests/conftest.py puts this folder on sys.path).

`image_inputs` draws a float NHWC image batch in any float dtype (float16/32/64, native or
big-endian), memory layout (C, Fortran, transposed, strided, reversed views, a JAX array) and, half
of the time, with one defect (another dtype, NaN, inf, values outside [0, 1], another rank, channel
count or image size, no images, a Python list). An entry point must accept the valid draws and
score them exactly as their C-contiguous float32 copy (`canonical`), and refuse each defect with the
error of `FLOAT_IMAGE_ERRORS` (or its own table) naming the argument.
"""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

FLOAT_DTYPES = ("float32", "float16", "float64", ">f2", ">f4", ">f8")
OTHER_DTYPES = ("int32", "uint8", "bool", "object", "complex64")
LAYOUTS = ("contiguous", "fortran", "transposed", "strided", "reversed", "jax")
VALUE_DEFECTS = ("nan", "inf", "negative", "above_one")
SHAPE_DEFECTS = (
  "rank3",
  "rank5",
  "one_channel",
  "odd_size",
  "no_images",
  "one_image",
  "zero_width",
)
DEFECTS = ("dtype", "list") + VALUE_DEFECTS + SHAPE_DEFECTS

# defect -> (exception type, message pattern) for every entry point taking float images in [0, 1].
FLOAT_IMAGE_ERRORS = {
  "dtype": (TypeError, "must be floating point"),
  "list": (TypeError, "must be an array"),
  "nan": (ValueError, "NaN or infinite"),
  "inf": (ValueError, "NaN or infinite"),
  "negative": (ValueError, r"must lie in \[0.0, 1.0\]"),
  "above_one": (ValueError, r"must lie in \[0.0, 1.0\]"),
  "rank3": (ValueError, "must have rank 4"),
  "rank5": (ValueError, "must have rank 4"),
  "no_images": (ValueError, "at least"),
}


def with_defect(x: np.ndarray, defect, position: int):
  """x (float32 NHWC) with the defect (None: x itself); position: the flat index of a bad value."""
  if defect in VALUE_DEFECTS:
    x = x.copy()
    x.flat[position % x.size] = {"nan": np.nan, "inf": -np.inf, "negative": -0.5}.get(defect, 1.5)
    return x
  shapes = {
    "rank3": lambda: x[0],
    "rank5": lambda: x[None],
    "one_channel": lambda: x[..., :1],
    "odd_size": lambda: x[:, :7, :9],
    "no_images": lambda: x[:0],
    "one_image": lambda: x[:1],
    "zero_width": lambda: x[:, :, :0],
  }
  return shapes[defect]() if defect in shapes else x


def as_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
  """x in [0, 1] as `dtype`: floats as they are, integers as round(255 x), bool as x > 0.5."""
  if dtype == "bool":
    return x > 0.5
  if dtype in ("int32", "uint8"):
    return np.round(np.nan_to_num(x) * 255).astype(dtype)
  return x.astype(dtype)


def relayout(x: np.ndarray, layout: str):
  """The same values in another memory layout (views with other strides), or as a JAX array."""
  if x.ndim < 3 or layout == "contiguous":
    return x
  if layout == "fortran":
    return np.asfortranarray(x)
  if layout == "transposed":
    return np.ascontiguousarray(np.swapaxes(x, -3, -2)).swapaxes(-3, -2)
  if layout == "reversed":
    return np.ascontiguousarray(np.flip(x, -2))[..., ::-1, :]
  if layout == "strided":
    wide = np.zeros(x.shape[:-2] + (2 * x.shape[-2], x.shape[-1]), x.dtype)
    wide[..., ::2, :] = x
    return wide[..., ::2, :]
  native_float = x.dtype.kind == "f" and x.dtype.isnative and x.dtype != np.float64
  return jnp.asarray(x) if native_float else x  # "jax": JAX takes native float16/32 only


@st.composite
def image_inputs(draw, bases, defects=DEFECTS, valid: bool = True):
  """(images, defect or None): one of `bases` (float32 NHWC in [0, 1]) in a drawn dtype, byte order
  and layout, with (half of the time; always unless `valid`) one of `defects`."""
  x = bases[draw(st.integers(0, len(bases) - 1))]
  defect = draw(
    st.sampled_from(defects) if not valid else st.one_of(st.none(), st.sampled_from(defects))
  )
  dtype = draw(st.sampled_from(OTHER_DTYPES if defect == "dtype" else FLOAT_DTYPES))
  x = as_dtype(with_defect(x, defect, draw(st.integers(0, x.size - 1))), dtype)
  x = relayout(x, draw(st.sampled_from(LAYOUTS)))
  return (x.tolist() if defect == "list" else x), defect


def canonical(x) -> np.ndarray:
  """The C-contiguous native float32 copy of x, which every valid draw must be scored as."""
  return np.ascontiguousarray(np.asarray(x).astype(np.float32))


def check_error(call, expected, name: str) -> None:
  """call() raises expected = (type, pattern), and the message names the argument `name`."""
  kind, pattern = expected
  with pytest.raises(kind, match=pattern) as info:
    call()
  message = str(info.value)
  assert re.search(rf"(^|\W){re.escape(name)}(\W|$)", message), (name, message)
