"""The per-image statistics of the conformal gate (`inflow_jax.gates.features`): the prior bits/dim
of the flow's levels and the PNG lengths at two resolutions."""

import io

import jax
import numpy as np
import pytest
from helpers import fast_jit
from PIL import Image

from inflow_jax.gates.features import complexity_bits, half_resolution, image_features, n_features
from inflow_jax.model import InFlow


@pytest.mark.parametrize("num_scales", [1, 3])
def test_image_features_leave_out_the_last_levels_prior(num_scales):
  """Per image: the prior bits/dim of every level but the last (the only one of a 1-scale flow),
  then the PNG bits/dim at full and half resolution."""
  model = InFlow(num_blocks=1, width=4, glow=True, num_scales=num_scales)
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (4, 16, 16, 3)))
  x = np.round(x * 255) / 255
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), x, 1.0)
  stats_ = fast_jit(lambda v, x: model.apply(v, x, 1.0, method=InFlow.statistics))(variables, x)
  features = image_features(model, variables, x)
  n_prior = max(num_scales - 1, 1)
  assert features.shape == (4, n_prior + 2) == (4, n_features(model))
  np.testing.assert_allclose(
    features[:, :n_prior],
    -np.asarray(stats_["log_prior_scales"])[:, :n_prior] / (x[0].size * np.log(2)),
    rtol=1e-5,
  )
  np.testing.assert_array_equal(features[:, n_prior:], complexity_bits(x))


def test_complexity_features_are_png_lengths_at_two_resolutions():
  rng = np.random.default_rng(3)
  x = np.round(rng.uniform(size=(4, 6, 5, 3)) * 255) / 255
  half = half_resolution(x)
  assert half.shape == (4, 3, 2, 3)  # the odd last column dropped
  np.testing.assert_allclose(half[:, 1, 0], np.round(255 * x[:, 2:4, 0:2].mean(axis=(1, 2))) / 255)
  bits = complexity_bits(x)
  for i, image in enumerate((x, half)):
    buffer = io.BytesIO()
    Image.fromarray(np.round(image[1] * 255).astype(np.uint8)).save(
      buffer, format="PNG", compress_level=9
    )
    assert bits[1, i] == pytest.approx(8 * buffer.getbuffer().nbytes / image[1].size)
