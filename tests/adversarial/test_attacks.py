"""The L-infinity attacks (`inflow_jax.adversarial.attacks`): FGSM and PGD on analytic objectives
(their maximisers known), the ball and the image box, per-image independence, the best iterate,
and bad parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inflow_jax import adversarial

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
  x_adv = adversarial.pgd(
    linear_loss,
    x,
    EPS,
    step_size=EPS / 2,
    num_steps=5,
    key=jax.random.key(0),
    random_start=random_start,
    loss_args=(w,),
  )
  np.testing.assert_allclose(x_adv, np.clip(x + EPS * np.sign(w), 0, 1), atol=1e-6)


def test_pgd_converges_to_an_interior_maximiser():
  x = _images()
  offset = np.random.default_rng(2).uniform(-EPS / 2, EPS / 2, x.shape).astype(np.float32)
  target = np.clip(x + offset, 0, 1)  # inside the eps ball and the image box
  step = EPS / 64
  x_adv = adversarial.pgd(
    negative_distance,
    x,
    EPS,
    step_size=step,
    num_steps=200,
    key=jax.random.key(3),
    loss_args=(target,),
  )
  # sign ascent oscillates around the maximiser with amplitude at most one step
  assert np.max(np.abs(np.asarray(x_adv) - target)) <= step + 1e-6


def test_pgd_stays_in_the_ball_and_in_the_image_box():
  x = _images(shape=(3, 6, 6, 1))
  x[0] = 0.0
  x[1] = 1.0
  w = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
  eps = 0.1
  x_adv = np.asarray(
    adversarial.pgd(
      lambda u, w: jnp.sum(jnp.sin(20 * u) * w),
      x,
      eps,
      step_size=0.07,
      num_steps=7,
      key=jax.random.key(5),
      loss_args=(w,),
    )
  )
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
  together = adversarial.pgd(
    per_image, x, EPS, step_size=EPS / 4, num_steps=4, key=key, random_start=False, loss_args=(w,)
  )
  alone = adversarial.pgd(
    per_image,
    x[1:2],
    EPS,
    step_size=EPS / 4,
    num_steps=4,
    key=key,
    random_start=False,
    loss_args=(w[1:2],),
  )
  np.testing.assert_allclose(together[1:2], alone, atol=1e-6)


def _sharp_loss(u, w):
  """A per-image loss whose sign-ascent overshoots: PGD's iterates go up and down."""
  return jnp.cos(jnp.sum(u * w, axis=(1, 2, 3)))


def test_pgd_returns_each_images_best_iterate():
  """The result is, per image, the iterate of the plain PGD recursion (written out here) with the
  largest loss, so it is never worse than the start even when the last iterate is."""
  x = _images(seed=8)
  w = np.random.default_rng(9).normal(size=x.shape).astype(np.float32)
  step, steps = 3 * EPS / 4, 6
  x_adv = np.asarray(
    adversarial.pgd(
      _sharp_loss, x, EPS, step_size=step, num_steps=steps, random_start=False, loss_args=(w,)
    )
  )
  grad = jax.grad(lambda u: jnp.sum(_sharp_loss(u, w)))
  low, high = np.clip(x - EPS, 0, 1), np.clip(x + EPS, 0, 1)
  iterates = [x]
  for _ in range(steps):
    iterates.append(
      np.clip(iterates[-1] + step * np.sign(np.asarray(grad(iterates[-1]))), low, high)
    )
  losses = np.stack([np.asarray(_sharp_loss(it, w)) for it in iterates])  # (T + 1, B)
  best = np.argmax(losses, axis=0)
  assert np.any(losses[-1] < losses[0]), "the test needs an objective whose last iterate is worse"
  np.testing.assert_allclose(
    x_adv, np.stack([iterates[t][i] for i, t in enumerate(best)]), atol=1e-6
  )
  assert np.all(np.asarray(_sharp_loss(x_adv, w)) >= losses[0] - 1e-5)


def test_zero_epsilon_leaves_images_unchanged():
  x = _images()
  w = np.ones(x.shape[1:], np.float32)
  np.testing.assert_array_equal(adversarial.fgsm(linear_loss, x, 0.0, loss_args=(w,)), x)
  np.testing.assert_array_equal(
    adversarial.pgd(
      linear_loss, x, 0.0, step_size=0.1, num_steps=2, key=jax.random.key(0), loss_args=(w,)
    ),
    x,
  )


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(epsilon=-0.1), "epsilon"),
    (dict(epsilon=float("nan")), "epsilon"),
    (dict(num_steps=0), "num_steps"),
    (dict(num_steps=-3), "num_steps"),
    (dict(num_steps=2.5), "num_steps"),
    (dict(step_size=0.0), "step_size"),
    (dict(step_size=-1.0), "step_size"),
    (dict(key=None), "key"),
  ],
)
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
