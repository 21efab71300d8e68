"""Fuzzing `InFlowDetector`'s public methods (`inflow_jax.detector`) with hypothesis: images in
every float dtype, byte order and memory layout are scored (and fitted on) exactly as their
contiguous float32 copy; every other dtype, rank, channel count, image size, batch size and value
range is refused with a ValueError / TypeError naming the argument (tests/fuzzing.py draws them)."""

import functools

import jax
import numpy as np
import pytest
from fuzzing import FLOAT_IMAGE_ERRORS, canonical, check_error, image_inputs, relayout
from hypothesis import given, settings
from hypothesis import strategies as st

from inflow_jax import InFlowDetector, data
from inflow_jax.model import InFlow

FUZZ = settings(max_examples=25, deadline=None)
SHAPE_ERRORS = {
  "one_channel": (ValueError, "must have 3 channels"),
  "odd_size": (ValueError, "must be 32x32 images"),
  "zero_width": (ValueError, "must be 32x32 images"),
}
BATCH_ERRORS = {**FLOAT_IMAGE_ERRORS, **SHAPE_ERRORS, "one_image": (ValueError, "at least 2")}
IMAGE_ERRORS = {**FLOAT_IMAGE_ERRORS, **SHAPE_ERRORS}  # one image is enough for per-image scores


@pytest.fixture(scope="module")
def digits():
  return data.load_images("digits", "train")[0]


@pytest.fixture(scope="module")
def detectors(digits):
  """{"mmd", "combined"}: tiny detectors fitted once, and the batches of 4 and 2 images they are
  fuzzed with (digits and noise)."""
  model = InFlow(num_blocks=2, width=8, paper_compat=True)  # as the other tests: shared compiles
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), digits[:2], 1.0)
  settings_ = dict(n_permutations=50, batch_size=10, n_components=2)
  mmd = InFlowDetector(model, variables, **settings_).fit(digits[:100])
  combined = InFlowDetector(model, variables, attention="combined", **settings_)
  combined.fit(digits[:100], x_calibration=digits[300:400])
  noise = data.load_images("uniform_noise", "test", max_images=4)[0]
  bases = (digits[500:504], digits[504:508], noise, np.concatenate([digits[508:511], noise[:1]]))
  bases += (digits[511:513],)  # and 2 images, the fewest the batch methods take
  return {"mmd": mmd, "combined": combined}, bases


def _same(a, b) -> bool:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _fuzz(detectors, method: str, errors, draw):
  """One draw against `method` of each detector that has it: valid images give the canonical copy's
  answer (finite), defects the error of `errors` naming x."""
  fitted, bases = detectors
  x, defect = draw(image_inputs(bases))
  for kind, detector in fitted.items():
    if method.startswith("image_") and kind == "mmd":
      continue
    call = getattr(detector, method)
    if defect in errors:
      check_error(lambda: call(x), errors[defect], "x")
      continue
    expected = _canonical_answer(detector, method, canonical(x).tobytes(), np.shape(x))
    got = call(x)
    assert _same(got, expected), (kind, method, defect, got, expected)
    values = [got.p_value, got.attention] if method == "test_batch" else got
    assert np.all(np.isfinite(values)) and len(np.atleast_1d(values)) in (2, len(x)), got


@functools.cache
def _canonical_answer(detector, method: str, values: bytes, shape):
  x = np.frombuffer(values, np.float32).reshape(shape)
  return getattr(detector, method)(x)


@FUZZ
@given(st.data())
@pytest.mark.parametrize("method", ["score", "predict", "test_batch"])
def test_batch_methods_fuzzed(detectors, method, draws):
  _fuzz(detectors, method, BATCH_ERRORS, draws.draw)


@FUZZ
@given(st.data())
@pytest.mark.parametrize("method", ["image_scores", "image_p_values"])
def test_per_image_methods_fuzzed(detectors, method, draws):
  _fuzz(detectors, method, IMAGE_ERRORS, draws.draw)


def test_other_image_sizes_are_refused_by_every_kind(detectors, digits):
  """Regression: the combined detector's per-image scores took 16x16, 64x64 and 7x9 images (the
  flow is convolutional) and scored them against a density of 32x32 ones."""
  fitted, _ = detectors
  combined = fitted["combined"]
  assert combined.image_shape == (32, 32, 3) == fitted["mmd"].image_shape
  for x in (digits[:4, :16, :16], np.repeat(np.repeat(digits[:4], 2, 1), 2, 2), digits[:4, :7, :9]):
    for method in (combined.image_scores, combined.image_p_values, combined.score):
      with pytest.raises(ValueError, match=r"^x must be 32x32 images"):
        method(x)
  with pytest.raises(ValueError, match=r"^x must have 3 channels"):
    combined.image_scores(digits[:4, ..., :1])


def test_memory_layout_does_not_change_the_per_image_scores(detectors, digits):
  """Regression: a transposed view of the same images got other conformal scores and p-values (the
  half-resolution PNG length rounded 2x2 means summed in the view's memory order)."""
  combined = detectors[0]["combined"]
  x = digits[500:508]
  transposed = relayout(x, "transposed")
  np.testing.assert_array_equal(combined.image_scores(transposed), combined.image_scores(x))
  assert combined.test_batch(transposed) == combined.test_batch(x)


def test_big_endian_images_are_scored_as_native_ones(detectors, digits):
  fitted, _ = detectors
  x = digits[500:504]
  for detector in fitted.values():
    np.testing.assert_array_equal(detector.score(x.astype(">f4")), detector.score(x))


FIT_ERRORS = {
  **FLOAT_IMAGE_ERRORS,
  "one_channel": (ValueError, r"^x_ref \(shape .*\) does not fit the flow: .*3 channels"),
  "odd_size": (ValueError, r"^embed cannot take x_ref of shape \(\d+, 7, 9, 3\): .*32x32"),
  "zero_width": (ValueError, "must hold non-empty images"),
  "one_image": (ValueError, "at least 2"),
}
INPUT_ERRORS = {**FLOAT_IMAGE_ERRORS, **SHAPE_ERRORS}  # x_calibration, x_threshold: after x_ref


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_fit_fuzzed(detectors, digits, draws):
  """x_ref of the paper's detector: valid draws fit the threshold of their float32 copy; defects are
  refused naming x_ref."""
  mmd = detectors[0]["mmd"]
  x_ref, defect = draws.draw(image_inputs((digits[:24], digits[24:48])))
  fresh = InFlowDetector(mmd.model, mmd.variables, n_permutations=50, batch_size=10)
  if defect in FIT_ERRORS:
    check_error(lambda: fresh.fit(x_ref), FIT_ERRORS[defect], "x_ref")
    return
  expected = _fitted_threshold(mmd, canonical(x_ref).tobytes(), np.shape(x_ref))
  assert fresh.fit(x_ref).threshold_ == expected and np.isfinite(expected)
  assert fresh.image_shape == (32, 32, 3)


@functools.cache
def _fitted_threshold(like, values: bytes, shape):
  x = np.frombuffer(values, np.float32).reshape(shape)
  fresh = InFlowDetector(like.model, like.variables, n_permutations=50, batch_size=10)
  return fresh.fit(x).threshold_


@settings(max_examples=25, deadline=None)
@given(st.data(), st.sampled_from(["x_calibration", "x_density", "x_threshold"]))
def test_fit_refuses_bad_calibration_density_and_threshold_images(detectors, digits, draws, name):
  """Every defect of fit's other images is refused before anything is fitted, naming the argument
  (other image sizes than x_ref's too: they were fitted or calibrated on silently)."""
  model, variables = detectors[0]["mmd"].model, detectors[0]["mmd"].variables
  bad, defect = draws.draw(image_inputs((digits[600:640],), valid=False))
  errors = dict(INPUT_ERRORS, one_image=(ValueError, "at least 2"))
  if name == "x_calibration":
    errors["one_image"] = (ValueError, "^x_calibration: 1 calibration images cannot reach level")
  if defect not in errors:
    return
  kind = "mmd" if name == "x_threshold" else "combined"
  fresh = InFlowDetector(model, variables, attention=kind, n_permutations=50, n_components=2)
  inputs = {"x_calibration": digits[300:340]} if kind == "combined" else {}
  check_error(lambda: fresh.fit(digits[:100], **{**inputs, name: bad}), errors[defect], name)


def test_conformal_detector_keeps_its_image_shape_through_save_and_load(
  detectors, digits, tmp_path
):
  """The conformal kind has no MMD test to hold the image shape: the detector stores it."""
  like = detectors[0]["mmd"]
  detector = InFlowDetector(like.model, like.variables, attention="conformal", n_components=2)
  detector.fit(digits[:100], x_calibration=digits[300:400])
  loaded = InFlowDetector.load(detector.save(tmp_path / "conformal"))
  assert loaded.mmd_state_ is None and loaded.image_shape == (32, 32, 3)
  np.testing.assert_array_equal(loaded.image_scores(digits[:3]), detector.image_scores(digits[:3]))
  with pytest.raises(ValueError, match=r"^x must be 32x32 images"):
    loaded.image_scores(digits[:3, :16, :16])


def test_fit_names_images_of_another_shape(detectors, digits):
  """Regression: fit took x_threshold, x_density and (conformal kind) x_calibration of another image
  size than x_ref's and fitted on them; the combined kind failed on x_calibration with numpy's
  'operands could not be broadcast'; one x_threshold image failed as 'the attention test needs at
  least 2 images'; a 1-channel x_ref was named x, with the flow's padded batch of 250."""
  like = detectors[0]["mmd"]
  make = lambda kind: InFlowDetector(like.model, like.variables, attention=kind, n_components=2)
  small, cal = digits[400:440, :16, :16], digits[300:340]
  for kind, inputs, name in [
    ("mmd", dict(x_threshold=small), "x_threshold"),
    ("conformal", dict(x_calibration=small), "x_calibration"),
    ("combined", dict(x_calibration=small), "x_calibration"),
    ("combined", dict(x_calibration=cal, x_density=small), "x_density"),
  ]:
    with pytest.raises(ValueError, match=rf"^{name} must be 32x32 images, got shape \(40, 16, 16"):
      make(kind).fit(digits[:100], **inputs)
  with pytest.raises(
    ValueError, match=r"^x_threshold must hold at least 2 image\(s\), got a batch"
  ):
    make("mmd").fit(digits[:100], x_threshold=digits[400:401])
  with pytest.raises(
    ValueError, match=r"^x_ref \(shape \(100, 32, 32, 1\)\) does not fit the flow"
  ):
    make("conformal").fit(digits[:100, ..., :1], x_calibration=cal[..., :1])
