"""L-infinity adversarial attacks (FGSM, PGD) generic over a differentiable objective.

The attacker MAXIMISES `loss_fn(x, *loss_args)` (a scalar, or a (B,) vector whose sum is maximised)
over images `x'` with `||x' - x||_inf <= epsilon` and `x'` in [0, 1]:

  FGSM:  x' = clip_[0,1](x + epsilon * sign(grad_x L(x)))
  PGD:   x_0 = clip_[0,1](x + U(-epsilon, epsilon))            (random start; else x_0 = x)
         x_{t+1} = clip_[0,1](clip_[x-eps, x+eps](x_t + step_size * sign(grad_x L(x_t))))
         result: the best iterate, argmax_{t = 0..T} L(x_t) (per image for a (B,) objective)

Returning the best iterate rather than x_T (as AutoAttack's APGD does) matters on sharp objectives
such as a flow's density: there a sign step overshoots and L oscillates, so the last iterate can
be far worse than the start, while the best one is never worse than x_0.

`loss_args` is an explicit pytree (model variables, labels, ...) passed through `jax.jit` as traced
values, so one compiled attack serves every batch of the same shape; `loss_fn` itself is static
(define it once at module level or once per target, not per call, or it recompiles).

Objectives: `inflow_jax.adversarial.objectives` (the detector) and
`inflow_jax.adversarial.classifier.ClassifierLoss`.
"""

import functools
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from inflow_jax.utils.checks import check_images

LossFn = Callable[..., jax.Array]


def _objective(loss_fn: LossFn, x: jax.Array, loss_args) -> Tuple[jax.Array, jax.Array]:
  """(sum of `loss_fn(x, *loss_args)`, the (B,) losses): per-image losses (B,) are maximised
  independently; a scalar loss is one value for the whole batch (broadcast to (B,))."""
  value = loss_fn(x, *loss_args)
  if value.ndim not in (0, 1):
    raise ValueError(f"loss_fn must return a scalar or a (B,) vector, got shape {value.shape}")
  return jnp.sum(value), jnp.broadcast_to(value, x.shape[:1])


def check_attack_parameters(
  epsilon: Optional[float] = None,
  step_size: Optional[float] = None,
  num_steps: Optional[int] = None,
) -> None:
  """Raises ValueError for epsilon < 0 or NaN, step_size <= 0, or num_steps not a positive integer
  (arguments left None are not checked)."""
  if epsilon is not None and not float(epsilon) >= 0.0:  # also rejects NaN
    raise ValueError(
      f"epsilon must be >= 0 (an L-infinity radius in [0, 1] pixel units), got {epsilon}"
    )
  if step_size is not None and not float(step_size) > 0.0:
    raise ValueError(f"step_size must be > 0, got {step_size}")
  if num_steps is not None:
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
      raise ValueError(f"num_steps must be a positive integer, got {num_steps}")


def _check_attack(
  x, epsilon: float, step_size: Optional[float] = None, num_steps: Optional[int] = None
):
  check_images(x, name="x", value_range=(0.0, 1.0))
  check_attack_parameters(epsilon, step_size, num_steps)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _fgsm(loss_fn: LossFn, x, epsilon, loss_args):
  grad = jax.grad(lambda u: _objective(loss_fn, u, loss_args)[0])(x)
  return jnp.clip(x + epsilon * jnp.sign(grad), 0.0, 1.0)


def fgsm(loss_fn: LossFn, x: jax.Array, epsilon: float, *, loss_args: tuple = ()) -> jax.Array:
  """Fast gradient sign method: one step of size `epsilon` along sign(grad L), clipped to [0, 1].

  Args:
    loss_fn: `loss_fn(x, *loss_args)` -> scalar or (B,), differentiable in `x`; maximised.
    x: (B, H, W, C) float images in [0, 1].
    epsilon: L-infinity radius, >= 0.
    loss_args: extra (traced) arguments of `loss_fn`.

  Returns:
    (B, H, W, C) float32 adversarial images with ||x' - x||_inf <= epsilon, in [0, 1].
  """
  _check_attack(x, epsilon)
  x = jnp.asarray(x, jnp.float32)
  return _fgsm(loss_fn, x, jnp.float32(epsilon), tuple(loss_args))


@functools.partial(jax.jit, static_argnames=("loss_fn", "random_start"))
def _pgd(loss_fn: LossFn, x, epsilon, step_size, num_steps, key, loss_args, random_start):
  low = jnp.clip(x - epsilon, 0.0, 1.0)
  high = jnp.clip(x + epsilon, 0.0, 1.0)
  if random_start:
    x_adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -epsilon, epsilon), low, high)
  else:
    x_adv = x
  grad_fn = jax.value_and_grad(lambda u: _objective(loss_fn, u, loss_args), has_aux=True)

  def keep_best(best, x_t, loss_t):
    best_x, best_loss = best
    better = loss_t > best_loss
    return jnp.where(better[:, None, None, None], x_t, best_x), jnp.where(better, loss_t, best_loss)

  def step(_, carry):
    x_t, best = carry
    (_, loss_t), grad = grad_fn(x_t)
    return jnp.clip(x_t + step_size * jnp.sign(grad), low, high), keep_best(best, x_t, loss_t)

  start = (x_adv, jnp.full(x.shape[:1], -jnp.inf, x.dtype))
  x_last, best = jax.lax.fori_loop(0, num_steps, step, (x_adv, start))
  return keep_best(best, x_last, _objective(loss_fn, x_last, loss_args)[1])[0]


def pgd(
  loss_fn: LossFn,
  x: jax.Array,
  epsilon: float,
  *,
  step_size: float,
  num_steps: int,
  key: Optional[jax.Array] = None,
  random_start: bool = True,
  loss_args: tuple = (),
) -> jax.Array:
  """Projected gradient (sign) ascent in the L-infinity ball of radius `epsilon` (Madry 2018).

  Args:
    loss_fn: `loss_fn(x, *loss_args)` -> scalar or (B,), differentiable in `x`; maximised.
    x: (B, H, W, C) float images in [0, 1].
    epsilon: L-infinity radius, >= 0.
    step_size: the sign-gradient step, > 0 (2.5 * epsilon / num_steps is the usual choice).
    num_steps: number of ascent steps, >= 1.
    key: PRNG key of the uniform random start; required when `random_start`.
    random_start: start from a uniform point in the ball instead of `x`.
    loss_args: extra (traced) arguments of `loss_fn`.

  Returns:
    (B, H, W, C) float32 adversarial images with ||x' - x||_inf <= epsilon, in [0, 1]: of the
    iterates x_0..x_T, the one with the largest loss (per image when `loss_fn` returns (B,)).
  """
  _check_attack(x, epsilon, step_size, num_steps)
  if random_start and key is None:
    raise ValueError(
      "pgd with random_start=True needs an explicit PRNG key (key=jax.random.key(...))"
    )
  if key is None:
    key = jax.random.key(0)  # unused: no random start
  x = jnp.asarray(x, jnp.float32)
  return _pgd(
    loss_fn,
    x,
    jnp.float32(epsilon),
    jnp.float32(step_size),
    jnp.int32(num_steps),
    key,
    tuple(loss_args),
    bool(random_start),
  )


def default_step_size(epsilon: float, num_steps: int) -> float:
  """The usual PGD step, 2.5 * epsilon / num_steps (enough to cross the ball and come back)."""
  return 2.5 * float(epsilon) / int(num_steps)
