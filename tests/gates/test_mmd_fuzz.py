"""Fuzzing the MMD test (`inflow_jax.gates.mmd_test`, `fit_mmd`) with hypothesis: images in every
float dtype, byte order and memory layout are tested (and fitted on) exactly as their contiguous
float32 copy; every other dtype, rank, channel count, image size, batch size and value range is
refused with a ValueError / TypeError naming the argument (tests/fuzzing.py draws them)."""

import jax
import numpy as np
import pytest
from fuzzing import FLOAT_IMAGE_ERRORS, canonical, check_error, image_inputs
from hypothesis import given, settings
from hypothesis import strategies as st

from inflow_jax import data
from inflow_jax.gates import fit_mmd, mmd_test
from inflow_jax.gates.encoder import make_encoder

KEY = jax.random.PRNGKey(0)
TEST_ERRORS = {
  **FLOAT_IMAGE_ERRORS,
  "one_channel": (ValueError, "^x must have 3 channels"),
  "odd_size": (ValueError, "^x must be 32x32 images"),
  "zero_width": (ValueError, "^x must be 32x32 images"),
  "one_image": (ValueError, "^x must hold at least 2 samples"),
}
FIT_ERRORS = {
  **FLOAT_IMAGE_ERRORS,
  "one_channel": (
    ValueError,
    r"^embed cannot take x_ref of shape \(\d+, 32, 32, 1\): .*3 channels",
  ),
  "odd_size": (ValueError, r"^embed cannot take x_ref of shape \(\d+, 7, 9, 3\): .*32x32"),
  "zero_width": (ValueError, "^x_ref must hold non-empty images"),
  "one_image": (ValueError, "^x_ref must hold at least 2"),
}


@pytest.fixture(scope="module")
def fitted():
  """(the encoder, an MMD test fitted on 30 digits, the batches of 4 and 2 it is fuzzed with, the
  reference sets of 12 that fit_mmd is fuzzed with)."""
  digits = data.load_images("digits", "train")[0]
  noise = data.load_images("uniform_noise", "test", max_images=4)[0]
  encoder = make_encoder(0)
  state = fit_mmd(digits[:30], encoder, n_permutations=20)
  return encoder, state, (digits[500:504], digits[504:506], noise), (digits[:12], digits[12:24])


_ANSWERS = {}  # (what, values, shape) -> the answer for the contiguous float32 copy


def _canonical(what: str, call, x):
  key = (what, canonical(x).tobytes(), np.shape(x))
  if key not in _ANSWERS:
    _ANSWERS[key] = call(canonical(x))
  return _ANSWERS[key]


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_mmd_test_fuzzed(fitted, draws):
  _, state, bases, _ = fitted
  x, defect = draws.draw(image_inputs(bases))
  if defect in TEST_ERRORS:
    check_error(lambda: mmd_test(state, x, KEY), TEST_ERRORS[defect], "x")
    return
  answer = lambda images: (lambda r: (float(r.p_value), float(r.mmd2)))(
    mmd_test(state, images, KEY)
  )
  expected = _canonical("test", answer, x)
  assert answer(x) == expected and np.isfinite(expected[1])


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_fit_mmd_fuzzed(fitted, draws):
  encoder, _, _, references = fitted
  x_ref, defect = draws.draw(image_inputs(references))
  if defect in FIT_ERRORS:
    check_error(lambda: fit_mmd(x_ref, encoder, n_permutations=20), FIT_ERRORS[defect], "x_ref")
    return
  state = fit_mmd(x_ref, encoder, n_permutations=20)
  expected = _canonical("fit", lambda images: fit_mmd(images, encoder, n_permutations=20), x_ref)
  np.testing.assert_array_equal(state.reference, expected.reference)
  assert float(state.sigma[0]) == float(expected.sigma[0])
  assert np.all(np.isfinite(state.reference))


def test_big_endian_images_are_tested_as_native_ones(fitted):
  """Regression: JAX read a big-endian (">f4") array's bytes as native floats: mmd_test gave MMD^2 =
  NaN (and the smallest p-value: every batch flagged), fit_mmd blamed 'NaN reference embeddings'."""
  encoder, state, (x, *_), (x_ref, _) = fitted
  native, swapped = mmd_test(state, x, KEY), mmd_test(state, x.astype(">f4"), KEY)
  assert np.isfinite(float(swapped.mmd2))
  assert (float(swapped.mmd2), float(swapped.p_value)) == (
    float(native.mmd2),
    float(native.p_value),
  )
  np.testing.assert_array_equal(
    fit_mmd(x_ref.astype(">f4"), encoder, n_permutations=20).reference,
    fit_mmd(x_ref, encoder, n_permutations=20).reference,
  )
