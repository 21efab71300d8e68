"""Attacks through the detector's JPEG round trip (`inflow_jax.adversarial.preprocessing`): the
straight-through derivative (BPDA), and PGD judged on what the detector sees."""

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax import adversarial
from inflow_jax.adversarial import preprocessing
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.gates.features import mean_pool

EPS = 8 / 255


def _images(seed=0, shape=(4, 8, 8, 3)):
  return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def test_jpeg_straight_through_is_the_round_trip_with_the_identity_derivative():
  x = _images(seed=10, shape=(3, 16, 16, 3))
  w = np.random.default_rng(11).normal(size=x.shape).astype(np.float32)
  value, grad = jax.jit(
    jax.value_and_grad(lambda u: jnp.sum(w * preprocessing.jpeg_straight_through(u, 75)))
  )(x)
  jpeg = jpeg_round_trip(x, 75)
  assert np.max(np.abs(jpeg - x)) > 1 / 255  # the round trip changes the images
  np.testing.assert_allclose(value, np.sum(w * jpeg), rtol=1e-5)
  np.testing.assert_array_equal(grad, w)  # d g / dx = I


def test_pgd_through_jpeg_optimises_what_the_detector_sees():
  """PGD on L(g(x)) (g the JPEG round trip): the best iterate is judged after g, so L(g(x_adv))
  never falls below L(g(x)), and it rises for a loss the round trip does not erase (a smooth
  one)."""
  x = _images(seed=12, shape=(4, 16, 16, 3)) * 0.5 + 0.25
  target = np.full(x.shape[1:], 0.5, np.float32)
  loss = lambda u, t: -jnp.sum(jnp.square(mean_pool(u) - mean_pool(t[None])), axis=(1, 2, 3))
  objective = preprocessing.ThroughJPEG(loss, 75)
  x_adv = np.asarray(
    adversarial.pgd(
      objective, x, EPS, step_size=EPS / 8, num_steps=12, random_start=False, loss_args=(target,)
    )
  )
  assert np.max(np.abs(x_adv - x)) <= EPS + 1e-6
  after, before = (np.asarray(loss(jpeg_round_trip(v, 75), target)) for v in (x_adv, x))
  assert np.all(after >= before - 1e-6) and np.all(after > before)
