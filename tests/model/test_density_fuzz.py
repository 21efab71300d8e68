"""Fuzzing the flow's score function (`inflow_jax.model.density.make_score_fn`) with hypothesis:
images in every float dtype, byte order and memory layout, of any size (the flow is convolutional),
are scored exactly as their contiguous float32 copy; attention as a scalar, list or array of any
real dtype likewise; every other dtype, rank, channel count and value range, and every attention
that is not real, of another length or outside [0, 1], is refused with a ValueError / TypeError
naming the argument (tests/fuzzing.py draws the images)."""

import jax
import numpy as np
import pytest
from fuzzing import FLOAT_IMAGE_ERRORS, canonical, check_error, image_inputs
from hypothesis import given, settings
from hypothesis import strategies as st

from inflow_jax.model import InFlow
from inflow_jax.model.density import make_score_fn

IMAGE_ERRORS = {
  **FLOAT_IMAGE_ERRORS,
  "one_channel": (ValueError, "^x must have 3 channels"),
  "zero_width": (ValueError, "^x must hold non-empty images"),
}  # odd sizes and one image are valid: the flow takes any size and batch


def _as_dtype(values, dtype: str) -> np.ndarray:
  with np.errstate(invalid="ignore"):  # NaN as int8 or bool: whatever the cast gives
    return np.asarray(values).astype(dtype)


ATTENTIONS = st.one_of(
  st.floats(-0.5, 1.5, width=32),
  st.sampled_from([0.0, 1.0, True, 0, 1, 2, np.nan, np.inf, None, "1", 1 + 0j, [[1.0]]]),
  st.lists(st.floats(0, 1, width=32), min_size=0, max_size=4),
  st.builds(
    _as_dtype,
    st.lists(st.sampled_from([0.0, 0.25, 1.0, -0.5, 1.5, np.nan]), min_size=3, max_size=3),
    st.sampled_from(["float16", "float32", ">f4", ">f8", "int8", "bool", "complex64"]),
  ),
)


@pytest.fixture(scope="module")
def small():
  """(score_fn of a tiny flow, the 3-image 8x10 batches it is fuzzed with)."""
  model = InFlow(num_blocks=2, width=8, paper_compat=True)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 10, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), x, 1.0)
  bases = tuple(
    np.random.default_rng(i).uniform(size=(3, 8, 10, 3)).astype(np.float32) for i in (0, 1)
  )
  return make_score_fn(model, variables, "paper"), bases


def _attention_error(attention, n: int):
  """The problem the score function must name for this attention, or None when it is valid."""
  values = np.asarray(attention)
  if values.dtype.kind not in "biuf":
    return TypeError, "^attention must be a real number"
  if values.shape not in ((), (n,)):
    return ValueError, rf"^attention must be a scalar or have shape \({n},\)"
  if not np.all((values >= 0) & (values <= 1)):  # False for NaN
    return ValueError, r"^attention must lie in \[0, 1\]"
  return None


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_score_fn_images_fuzzed(small, draws):
  score_fn, bases = small
  x, defect = draws.draw(image_inputs(bases))
  if defect in IMAGE_ERRORS:
    check_error(lambda: score_fn(x, 1.0), IMAGE_ERRORS[defect], "x")
    return
  scores = np.asarray(score_fn(x, 1.0))
  np.testing.assert_array_equal(scores, score_fn(canonical(x), 1.0))
  assert scores.shape == (len(x),) and np.all(np.isfinite(scores))


@settings(max_examples=60, deadline=None)
@given(ATTENTIONS)
def test_score_fn_attention_fuzzed(small, attention):
  score_fn, (x, _) = small
  expected = _attention_error(attention, len(x))
  if expected is not None:
    check_error(lambda: score_fn(x, attention), expected, "attention")
    return
  scores = np.asarray(score_fn(x, attention))
  per_image = np.broadcast_to(np.asarray(attention).astype(np.float32), (len(x),))
  np.testing.assert_array_equal(scores, score_fn(x, np.ascontiguousarray(per_image)))
  assert np.all(np.isfinite(scores))


def test_bad_attention_is_named():
  """Regression: attention of another length raised JAX's 'Incompatible types for broadcasting',
  a complex one 'float() argument must be ...', and a string was taken as a number."""
  model = InFlow(num_blocks=2, width=8, paper_compat=True)
  x = np.full((2, 4, 4, 3), 0.5, np.float32)
  score_fn = make_score_fn(model, jax.jit(model.init)(jax.random.PRNGKey(1), x, 1.0))
  with pytest.raises(ValueError, match=r"^attention must be a scalar or have shape \(2,\)"):
    score_fn(x, [1.0, 1.0, 1.0])
  for attention in (1 + 0j, "1", None):
    with pytest.raises(TypeError, match="^attention must be a real number"):
      score_fn(x, attention)
  with pytest.raises(ValueError, match=r"^x must hold non-empty images.*\(2, 0, 4, 3\)"):
    score_fn(x[:, :0], 1.0)  # was a ZeroDivisionError
