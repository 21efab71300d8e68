"""The attack settings (`adversarial.attack`, `configs/default.get_attack_config`): their checks and
the PGD steps they give.

The classifier attack runs `num_steps` steps of `step_size` (None: 2.5 epsilon / num_steps); the
adaptive attacks on the detector `adaptive_num_steps` of `adaptive_step_size` (None: the classifier
attack's). A flow's density is sharp, so its attacks want small steps and many of them
(`configs/experiments/cifar10_glow_conformal_shared.py`: 50 of 1/255 at 8/255).
"""

from typing import Optional, Sequence, Tuple

import ml_collections

from inflow_jax.adversarial.attacks import check_attack_parameters, default_step_size

ADAPTIVE_TARGETS = (
  "log_likelihood",
  "mmd",
  "conformal",
  "conformal_surrogate",
  "mean_shift",
  "two_view",
)


def check_attack_config(
  attack_config: ml_collections.ConfigDict,
  ood_names: Optional[Sequence[str]] = None,
  *,
  prefix: str = "adversarial.attack",
) -> None:
  """Raises ValueError naming `{prefix}.<key>` for settings no attack can run with.

  Rejected: an epsilon (`epsilons[i]`, `adaptive_epsilon`) < 0 or NaN, `num_steps` /
  `adaptive_num_steps` not a positive integer, `step_size` / `adaptive_step_size` <= 0,
  `batch_size` or `max_images` < 1, `adaptive_targets` outside ADAPTIVE_TARGETS and, given the OOD
  set names, `adaptive_ood` sets that are not among them.
  """
  c = attack_config
  checks = [(f"{prefix}.epsilons[{i}]", dict(epsilon=e)) for i, e in enumerate(c.epsilons)]
  checks += [
    (f"{prefix}.adaptive_epsilon", dict(epsilon=c.adaptive_epsilon)),
    (f"{prefix}.num_steps", dict(num_steps=c.num_steps)),
    (f"{prefix}.step_size", dict(step_size=c.step_size)),
    (f"{prefix}.adaptive_num_steps", dict(num_steps=c.get("adaptive_num_steps"))),
    (f"{prefix}.adaptive_step_size", dict(step_size=c.get("adaptive_step_size"))),
  ]
  for key, kwargs in checks:
    try:
      check_attack_parameters(**kwargs)
    except ValueError as error:
      raise ValueError(f"{key}: {error}") from error
  for name in ("batch_size", "max_images"):
    if c[name] is not None and c[name] < 1:
      raise ValueError(f"{prefix}.{name} must be >= 1, got {c[name]}")
  targets = tuple(c.adaptive_targets)
  if set(targets) - set(ADAPTIVE_TARGETS):
    raise ValueError(
      f"{prefix}.adaptive_targets must be a subset of {ADAPTIVE_TARGETS}, got {targets}"
    )
  missing = [n for n in (c.adaptive_ood or ()) if ood_names is not None and n not in ood_names]
  if missing:
    raise ValueError(
      f"{prefix}.adaptive_ood names {missing}, not among the OOD sets {sorted(ood_names)}"
    )


def classifier_step_size(attack_config, epsilon: float) -> float:
  """The classifier attack's PGD step at epsilon: `step_size`, or None: 2.5 epsilon / num_steps."""
  if attack_config.step_size is not None:
    return float(attack_config.step_size)
  return default_step_size(epsilon, attack_config.num_steps)


def adaptive_steps(attack_config) -> Tuple[int, float]:
  """(num_steps, step_size) of the adaptive attacks: `adaptive_num_steps` / `adaptive_step_size`,
  each None meaning the classifier attack's `num_steps` / step rule."""
  num_steps = attack_config.get("adaptive_num_steps")
  num_steps = attack_config.num_steps if num_steps is None else num_steps
  step_size = attack_config.get("adaptive_step_size")
  if step_size is None:
    step_size = (
      attack_config.step_size
      if attack_config.step_size is not None
      else default_step_size(attack_config.adaptive_epsilon, num_steps)
    )
  return int(num_steps), float(step_size)
