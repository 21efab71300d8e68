"""The optimiser: PyTorch's Adam with coupled L2, a learning-rate schedule, clipping, an EMA of the
parameters. All of it is optax; the paper's settings give exactly the original chain.

  g  = clip(grad L(w), clip_norm)                      (global norm; off when clip_norm is None)
  g' = g + wd * w;  m, v = Adam moments of g' (b1, b2, eps)
  w <- w - lr_t * m_hat / (sqrt(v_hat) + eps)                           optimizer 'adam'
  m <- b1 * m + g';  w <- w - lr_t * (g' + b1 * m)      optimizer 'sgd' (Nesterov momentum b1)
  lr_t = learning_rate * min(1, t / warmup_steps)          schedule 'constant'
       = ... then cosine decay to 0 at num_steps           schedule 'cosine'
       = ... constant, then linear decay to 0 over the last decay_steps   schedule 'wsd'
         (warm-up-stable-decay: Hagele et al. 2024, "Scaling laws and compute-optimal training
         beyond fixed training durations")
  ema <- d_t * ema + (1 - d_t) * w,  d_t = min(ema_decay, (1 + t) / (10 + t))
        (after update t = 0, 1, ...; the warm-up of tf.train.ExponentialMovingAverage's num_updates,
        so early averages are not dominated by the initial weights; ema_decay None: no EMA)
  norm_bias_lr_scale: the gradients of batch-norm biases times this before the weight decay (so
        their learning rate, not their decay, is scaled; airbench: 64). Optional key, default 1
  lookahead_every: every k steps w <- s <- d_t s + (1 - d_t) w, d_t = 0.95^5 (t / num_steps)^3,
        the slow weights s (Zhang et al. 2019's lookahead with airbench's schedule: no averaging
        early, strong averaging at the end). Optional key, default 0: off
  skip_factor: steps whose raw gradient norm is non-finite or above skip_factor x its running
        geometric mean change nothing (`inflow_jax.training.skip`; None: every step is applied)

The EMA lives in the optimiser state (`ParamsEMA`), so checkpoints hold it and a resumed run
continues it exactly; `ema_params(opt_state)` reads it back. With warmup_steps = 0, a constant
schedule, no clipping and no EMA the chain is add_decayed_weights -> scale_by_adam -> scale(-lr),
bit for bit the paper's optimiser (the recorded-trajectory test checks it).
"""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from inflow_jax.training.skip import SkipState, skip_outlier_steps

SCHEDULES = ("constant", "cosine", "wsd")
OPTIMIZERS = ("adam", "sgd")
# The settings `make_optimizer` reads (of `train` and `adversarial.train`): one compiled step per
# value.
OPTIMIZER_KEYS = (
  "optimizer",
  "learning_rate",
  "b1",
  "b2",
  "eps",
  "weight_decay",
  "num_steps",
  "warmup_steps",
  "schedule",
  "decay_steps",
  "clip_norm",
  "ema_decay",
  "skip_factor",
)
# Settings a train config may leave out, and their defaults.
OPTIONAL_OPTIMIZER_KEYS = {"norm_bias_lr_scale": 1.0, "lookahead_every": 0}


def optimizer_settings(train_config: ml_collections.ConfigDict) -> dict:
  """The settings `make_optimizer` reads, the optional ones filled in with their defaults."""
  settings = {k: train_config[k] for k in OPTIMIZER_KEYS}
  settings.update({k: optional_setting(train_config, k) for k in OPTIONAL_OPTIMIZER_KEYS})
  return settings


def optional_setting(train_config: ml_collections.ConfigDict, key: str):
  """train_config[key], or its default in OPTIONAL_OPTIMIZER_KEYS when the config leaves it out."""
  return train_config.get(key, OPTIONAL_OPTIMIZER_KEYS[key])


class ParamsEMA(NamedTuple):
  """Optimiser state of `track_ema`: the number of updates averaged and the moving average."""

  count: Any
  ema: Any


def track_ema(decay: float) -> optax.GradientTransformation:
  """Leaves the updates unchanged and keeps ema = d_t ema + (1 - d_t) (params + updates), the
  average of the parameters after each step (module docstring; initialised to the initial ones)."""

  def init(params):
    return ParamsEMA(count=jnp.zeros((), jnp.int32), ema=jax.tree.map(jnp.asarray, params))

  def update(updates, state, params):
    new = optax.apply_updates(params, updates)
    t = state.count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    ema = jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), state.ema, new)
    return updates, ParamsEMA(count=state.count + 1, ema=ema)

  return optax.GradientTransformation(init, update)


class LookaheadState(NamedTuple):
  """Optimiser state of `lookahead`: the steps taken and the slow weights."""

  count: Any
  slow: Any


def lookahead(every: int, num_steps: int, decay: float = 0.95**5) -> optax.GradientTransformation:
  """Every `every` updates (and at the last) the parameters jump to the new slow weights
  s <- d_t s + (1 - d_t) w, d_t = decay (t / num_steps)^3 (module docstring)."""

  def init(params):
    return LookaheadState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.asarray, params))

  def update(updates, state, params):
    new = optax.apply_updates(params, updates)
    count = state.count + 1
    d = decay * (count.astype(jnp.float32) / num_steps) ** 3
    sync = (count % every == 0) | (count == num_steps)
    slow = jax.tree.map(lambda s, w: jnp.where(sync, d * s + (1.0 - d) * w, s), state.slow, new)
    updates = jax.tree.map(lambda s, p, u: jnp.where(sync, s - p, u), slow, params, updates)
    return updates, LookaheadState(count, slow)

  return optax.GradientTransformation(init, update)


def _is_norm_bias(path) -> bool:
  names = [str(getattr(k, "key", k)) for k in path]
  return names[-1] == "bias" and any(n.startswith("BatchNorm") for n in names[:-1])


def scale_norm_biases(multiplier: float) -> optax.GradientTransformation:
  """The updates of batch-norm biases (a "bias" under a "BatchNorm" module) times multiplier."""

  def label(params):
    return jax.tree_util.tree_map_with_path(
      lambda path, _: "norm_bias" if _is_norm_bias(path) else "other", params
    )

  return optax.multi_transform(
    {"norm_bias": optax.scale(multiplier), "other": optax.identity()}, label
  )


def make_schedule(train_config: ml_collections.ConfigDict):
  """The learning rate: a float (constant, no warm-up) or an optax schedule of the step."""
  c = train_config
  if not c.warmup_steps and c.schedule == "constant":
    return float(c.learning_rate)
  warmup = optax.linear_schedule(0.0, c.learning_rate, max(1, c.warmup_steps))
  if c.schedule == "wsd":
    stable = c.num_steps - c.warmup_steps - c.decay_steps
    return optax.join_schedules(
      [
        warmup,
        optax.constant_schedule(c.learning_rate),
        optax.linear_schedule(c.learning_rate, 0.0, c.decay_steps),
      ],
      [c.warmup_steps, c.warmup_steps + stable],
    )
  after = (
    optax.constant_schedule(c.learning_rate)
    if c.schedule == "constant"
    else optax.cosine_decay_schedule(c.learning_rate, max(1, c.num_steps - c.warmup_steps))
  )
  return optax.join_schedules([warmup, after], [c.warmup_steps])


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The chain of the module docstring for `train_config`."""
  c = train_config
  schedule = make_schedule(c)
  parts = [] if c.clip_norm is None else [optax.clip_by_global_norm(c.clip_norm)]
  norm_bias_lr_scale = optional_setting(c, "norm_bias_lr_scale")
  if norm_bias_lr_scale != 1.0:
    parts.append(scale_norm_biases(norm_bias_lr_scale))
  parts += [
    optax.add_decayed_weights(c.weight_decay),
    optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps)
    if c.optimizer == "adam"
    else optax.trace(decay=c.b1, nesterov=True),
    optax.scale(-schedule)
    if isinstance(schedule, float)
    else optax.scale_by_learning_rate(schedule),
  ]
  if optional_setting(c, "lookahead_every"):
    parts.append(lookahead(c.lookahead_every, c.num_steps))
  if c.ema_decay is not None:
    parts.append(track_ema(c.ema_decay))
  chain = optax.chain(*parts)
  return chain if c.skip_factor is None else skip_outlier_steps(chain, c.skip_factor)


def ema_params(opt_state) -> Optional[Any]:
  """The EMA parameters held in an optimiser state of `make_optimizer` (None without EMA)."""
  if isinstance(opt_state, SkipState):
    opt_state = opt_state.inner
  for part in opt_state if isinstance(opt_state, tuple) else (opt_state,):
    if isinstance(part, ParamsEMA):
      return part.ema
  return None


def check_optimizer_config(
  train_config: ml_collections.ConfigDict,
  num_devices: int,
  num_processes: int = 1,
  *,
  prefix: str = "train",
  min_steps: int = 0,
) -> None:
  """Raises ValueError, naming `{prefix}.<key>`, for step counts, batch sizes, Adam, schedule,
  clipping or EMA settings that cannot train on `num_devices` devices of `num_processes`
  processes."""
  c = train_config
  if c.num_steps < min_steps:
    raise ValueError(f"{prefix}.num_steps must be >= {min_steps}, got {c.num_steps}")
  if c.batch_size < 1:
    raise ValueError(f"{prefix}.batch_size must be >= 1, got {c.batch_size}")
  for count, what in ((num_devices, "devices"), (num_processes, "processes")):
    if c.batch_size % count:
      raise ValueError(
        f"{prefix}.batch_size={c.batch_size} is not divisible by the number of {what} "
        f"({count}); use a multiple of {count}"
      )
  if c.optimizer not in OPTIMIZERS:
    raise ValueError(f"{prefix}.optimizer must be one of {OPTIMIZERS}, got {c.optimizer!r}")
  for name in ("learning_rate", "eps"):
    if not c[name] > 0:
      raise ValueError(f"{prefix}.{name} must be > 0, got {c[name]}")
  if not (0 <= c.b1 < 1 and 0 <= c.b2 < 1):
    raise ValueError(f"{prefix}.b1 and {prefix}.b2 must lie in [0, 1), got {c.b1}, {c.b2}")
  if c.weight_decay < 0:
    raise ValueError(f"{prefix}.weight_decay must be >= 0, got {c.weight_decay}")
  if c.schedule not in SCHEDULES:
    raise ValueError(f"{prefix}.schedule must be one of {SCHEDULES}, got {c.schedule!r}")
  if c.warmup_steps < 0 or (c.warmup_steps and c.warmup_steps >= c.num_steps):
    raise ValueError(
      f"{prefix}.warmup_steps={c.warmup_steps} must lie in [0, num_steps={c.num_steps}) "
      "(a warm-up as long as the training never reaches the learning rate)"
    )
  if c.schedule == "wsd" and not 0 < c.decay_steps <= c.num_steps - c.warmup_steps:
    raise ValueError(
      f"{prefix}.decay_steps={c.decay_steps} must lie in (0, num_steps - warmup_steps = "
      f"{c.num_steps - c.warmup_steps}] for schedule 'wsd'"
    )
  if c.clip_norm is not None and not c.clip_norm > 0:
    raise ValueError(f"{prefix}.clip_norm must be > 0 (or None: no clipping), got {c.clip_norm}")
  if c.ema_decay is not None and not 0 < c.ema_decay < 1:
    raise ValueError(f"{prefix}.ema_decay must lie in (0, 1) (or None: no EMA), got {c.ema_decay}")
  _check_optional_settings(c, prefix)
  if c.skip_factor is not None and not c.skip_factor > 1:
    raise ValueError(
      f"{prefix}.skip_factor must be > 1 (or None: no skipping), got {c.skip_factor} "
      "(a threshold at or below the typical gradient norm skips ordinary steps)"
    )


def _check_optional_settings(train_config: ml_collections.ConfigDict, prefix: str) -> None:
  """Raises ValueError, naming the key, for bad OPTIONAL_OPTIMIZER_KEYS values."""
  norm_bias_lr_scale, lookahead_every = (
    optional_setting(train_config, k) for k in ("norm_bias_lr_scale", "lookahead_every")
  )
  if not norm_bias_lr_scale > 0:
    raise ValueError(f"{prefix}.norm_bias_lr_scale must be > 0, got {norm_bias_lr_scale}")
  if not 0 <= lookahead_every <= train_config.num_steps:
    raise ValueError(
      f"{prefix}.lookahead_every must lie in [0, num_steps={train_config.num_steps}] "
      f"(0: no lookahead), got {lookahead_every}"
    )
