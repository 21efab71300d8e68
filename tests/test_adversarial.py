"""Tests of inflow_jax.adversarial: attacks on analytic objectives, the classifier, InFlow targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inflow_jax import adversarial, attention, data, encoder, scoring
from inflow_jax.model import InFlow

EPS = 8 / 255


def _images(seed=0, shape=(4, 8, 8, 3)):
  return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def linear_loss(x, w):
  """L(x) = <w, x> per image: its maximiser in the box is x + eps * sign(w), clipped."""
  return jnp.sum(x * w, axis=(1, 2, 3))


def negative_distance(x, target):
  """L(x) = -||x - target||^2: maximised at the target."""
  return -jnp.sum((x - target) ** 2)


def test_fgsm_on_linear_loss_is_the_signed_step():
  x = _images()
  w = np.random.default_rng(1).normal(size=x.shape[1:]).astype(np.float32)
  x_adv = adversarial.fgsm(linear_loss, x, EPS, loss_args=(w,))
  np.testing.assert_allclose(x_adv, np.clip(x + EPS * np.sign(w), 0, 1), atol=1e-6)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_on_linear_loss_reaches_the_box_corner(random_start):
  x = _images()
  w = np.random.default_rng(1).normal(size=x.shape[1:]).astype(np.float32)
  x_adv = adversarial.pgd(linear_loss, x, EPS, step_size=EPS / 2, num_steps=5,
                          key=jax.random.key(0), random_start=random_start, loss_args=(w,))
  np.testing.assert_allclose(x_adv, np.clip(x + EPS * np.sign(w), 0, 1), atol=1e-6)


def test_pgd_converges_to_an_interior_maximiser():
  x = _images()
  offset = np.random.default_rng(2).uniform(-EPS / 2, EPS / 2, x.shape).astype(np.float32)
  target = np.clip(x + offset, 0, 1)  # inside the eps ball and the image box
  step = EPS / 64
  x_adv = adversarial.pgd(negative_distance, x, EPS, step_size=step, num_steps=200,
                          key=jax.random.key(3), loss_args=(target,))
  # sign ascent oscillates around the maximiser with amplitude at most one step
  assert np.max(np.abs(np.asarray(x_adv) - target)) <= step + 1e-6


def test_pgd_stays_in_the_ball_and_in_the_image_box():
  x = _images(shape=(3, 6, 6, 1))
  x[0] = 0.0
  x[1] = 1.0
  w = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
  eps = 0.1
  x_adv = np.asarray(adversarial.pgd(lambda u, w: jnp.sum(jnp.sin(20 * u) * w), x, eps,
                                     step_size=0.07, num_steps=7, key=jax.random.key(5),
                                     loss_args=(w,)))
  assert np.max(np.abs(x_adv - x)) <= eps + 1e-6
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  assert x_adv.dtype == np.float32


def test_per_image_losses_are_attacked_independently():
  """With a (B,) loss, image i's perturbation depends only on image i's loss."""
  x = _images()
  w = np.random.default_rng(6).normal(size=x.shape).astype(np.float32)

  def per_image(u, w):
    return jnp.sum(jnp.cos(5 * u) * w, axis=(1, 2, 3))

  key = jax.random.key(7)
  together = adversarial.pgd(per_image, x, EPS, step_size=EPS / 4, num_steps=4, key=key,
                             random_start=False, loss_args=(w,))
  alone = adversarial.pgd(per_image, x[1:2], EPS, step_size=EPS / 4, num_steps=4, key=key,
                          random_start=False, loss_args=(w[1:2],))
  np.testing.assert_allclose(together[1:2], alone, atol=1e-6)


def test_zero_epsilon_leaves_images_unchanged():
  x = _images()
  w = np.ones(x.shape[1:], np.float32)
  np.testing.assert_array_equal(adversarial.fgsm(linear_loss, x, 0.0, loss_args=(w,)), x)
  np.testing.assert_array_equal(
      adversarial.pgd(linear_loss, x, 0.0, step_size=0.1, num_steps=2, key=jax.random.key(0),
                      loss_args=(w,)), x)


@pytest.mark.parametrize("kwargs, message", [
    (dict(epsilon=-0.1), "epsilon"),
    (dict(epsilon=float("nan")), "epsilon"),
    (dict(num_steps=0), "num_steps"),
    (dict(num_steps=-3), "num_steps"),
    (dict(num_steps=2.5), "num_steps"),
    (dict(step_size=0.0), "step_size"),
    (dict(step_size=-1.0), "step_size"),
    (dict(key=None), "key"),
])
def test_bad_pgd_parameters_raise(kwargs, message):
  arguments = dict(epsilon=EPS, step_size=EPS / 4, num_steps=3, key=jax.random.key(0))
  arguments.update(kwargs)
  epsilon = arguments.pop("epsilon")
  with pytest.raises(ValueError, match=message):
    adversarial.pgd(negative_distance, _images(), epsilon, loss_args=(_images(1),), **arguments)


def test_bad_inputs_raise():
  w = np.ones((8, 8, 3), np.float32)
  with pytest.raises(ValueError, match="epsilon"):
    adversarial.fgsm(linear_loss, _images(), -1 / 255, loss_args=(w,))
  with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
    adversarial.fgsm(linear_loss, 255 * _images(), EPS, loss_args=(w,))
  with pytest.raises(ValueError, match="rank 4"):
    adversarial.fgsm(linear_loss, _images()[0], EPS, loss_args=(w,))
  with pytest.raises(ValueError, match="scalar or a"):
    adversarial.fgsm(lambda u: u, _images(), EPS)


# ---- the detector objectives (adaptive attacks) ----------------------------------------------------

@pytest.fixture(scope="module")
def digits_and_noise():
  x_ref, _ = data.load_images("digits", "train", max_images=120)
  x_noise, _ = data.load_images("uniform_noise", "test", max_images=16)
  return x_ref, x_noise


def test_batch_mmd2_is_the_tests_statistic_and_the_attack_lowers_it(digits_and_noise):
  x_ref, x_noise = digits_and_noise
  state = attention.fit_mmd(x_ref, encoder.make_encoder(0), n_permutations=50)
  key = jax.random.key(0)
  before = attention.mmd_test(state, x_noise, key)
  np.testing.assert_allclose(adversarial.batch_mmd2(state, x_noise), before.mmd2, rtol=1e-4, atol=1e-7)
  assert float(before.attention) == 0.0   # noise is flagged
  x_adv = adversarial.pgd(adversarial.LowerMMD(), x_noise, EPS, step_size=EPS / 4, num_steps=8,
                          key=jax.random.key(1), loss_args=(state,))
  after = attention.mmd_test(state, np.asarray(x_adv), key)
  assert np.max(np.abs(np.asarray(x_adv) - x_noise)) <= EPS + 1e-6
  assert float(after.mmd2) < 0.5 * float(before.mmd2)
  assert float(after.attention) == 1.0    # the attacked batch passes as in-distribution


def test_likelihood_attack_raises_the_flow_log_likelihood(digits_and_noise):
  _, x_noise = digits_and_noise
  model = InFlow(num_blocks=1, width=8)
  # random weights drawn by numpy: a non-trivial flow without compiling model.init
  shapes = jax.eval_shape(model.init, jax.random.key(0), x_noise[:2], 1.0)
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.1, s.shape), s.dtype), shapes)
  nll_fn = scoring.make_score_fn(model, variables, "nll")
  objective = adversarial.LowerScore(nll_fn)
  x_adv = adversarial.pgd(objective, x_noise, EPS, step_size=EPS / 2, num_steps=3,
                          key=jax.random.key(2))
  # an equally large perturbation in a random sign direction, for comparison
  signs = np.sign(np.random.default_rng(3).normal(size=x_noise.shape)).astype(np.float32)
  x_random = np.clip(x_noise + EPS * signs, 0, 1)
  nll_before, nll_after, nll_random = (float(np.mean(nll_fn(x, 1.0))) for x in (x_noise, x_adv, x_random))
  assert nll_after < nll_before and nll_after < nll_random
