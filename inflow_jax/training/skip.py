"""Skipping outlier gradient steps: a guard against the loss spikes that make long flow runs
diverge.

  n_t   = ||g_t||  (global norm of the raw gradient, before clipping)
  r_t   = exp(ell_t),  ell_{t+1} = rho * ell_t + (1 - rho) * min(log n_t, log(factor * r_t))
  skip step t  when  n_t is not finite  or  (t_accepted >= warmup  and  n_t > factor * r_t)

A skipped step leaves the parameters and the whole inner optimiser state (Adam moments, schedule
count, EMA) unchanged, so one bad batch cannot push a large gradient into Adam's first moment and
from there into the next ten or so updates. The reference r_t is a running geometric mean of the
gradient norm (rho = 0.99); skipped norms enter it clipped at the threshold, so a lasting rise of
the norm raises the reference within a few hundred steps instead of skipping forever. For the first
`warmup` accepted steps only non-finite gradients are skipped (the reference is not settled yet).
The skip-on-threshold rule of VDVAE (Child 2021) and optax.apply_if_finite, with a relative
threshold so that one setting serves every model and loss scale.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

REFERENCE_DECAY = 0.99
WARMUP_STEPS = 100


class SkipState(NamedTuple):
  """State of `skip_outlier_steps`: the inner state, the log-norm reference, the accepted and the
  skipped step counts."""

  inner: Any
  log_norm: Any
  accepted: Any
  skipped: Any


def skip_outlier_steps(
  inner: optax.GradientTransformation, factor: float, *, warmup: int = WARMUP_STEPS
) -> optax.GradientTransformation:
  """`inner`, except that steps with a non-finite gradient or a gradient norm above `factor` times
  the running reference (module docstring) give zero updates and keep `inner`'s state."""
  log_factor = jnp.log(jnp.float32(factor))

  def init(params):
    zero = jnp.zeros((), jnp.int32)
    return SkipState(inner.init(params), jnp.zeros((), jnp.float32), zero, zero)

  def update(updates, state, params=None):
    log_n = jnp.log(optax.tree.norm(updates).astype(jnp.float32))
    finite = jnp.isfinite(log_n)  # a NaN or inf entry makes the norm non-finite
    settled = state.accepted >= warmup
    outlier = settled & (log_n > state.log_norm + log_factor)
    accept = finite & ~outlier
    new_updates, new_inner = inner.update(updates, state.inner, params)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)
    new_updates = jax.tree.map(lambda u: jnp.where(accept, u, jnp.zeros_like(u)), new_updates)
    seen = jnp.where(settled, jnp.minimum(log_n, state.log_norm + log_factor), log_n)
    rho = jnp.where(state.accepted == 0, 0.0, REFERENCE_DECAY)
    log_norm = jnp.where(finite, rho * state.log_norm + (1.0 - rho) * seen, state.log_norm)
    return new_updates, SkipState(
      keep(new_inner, state.inner),
      log_norm,
      state.accepted + accept.astype(jnp.int32),
      state.skipped + (~accept).astype(jnp.int32),
    )

  return optax.GradientTransformation(init, update)


def skipped_steps(opt_state) -> int:
  """How many steps `skip_outlier_steps` skipped so far (0 for optimiser states without the
  guard)."""
  if not isinstance(opt_state, SkipState):
    return 0
  skipped = opt_state.skipped
  return int(
    np.asarray(skipped.addressable_data(0) if hasattr(skipped, "addressable_data") else skipped)
  )
