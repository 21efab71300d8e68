"""Every value check of a job's config, before any loading or training: the keys against the schema
(`configs/default.py`), the mode, the training settings against the devices, the attention and
evaluation settings and their cross-checks, the adversarial settings."""

import jax
import ml_collections

from configs import default as default_config
from inflow_jax.adversarial import classifier as classifier_lib
from inflow_jax.adversarial.settings import check_attack_config
from inflow_jax.data.jpeg import check_jpeg_quality
from inflow_jax.detector import ATTENTION_KINDS
from inflow_jax.detector.fitting import MMD_ENCODERS
from inflow_jax.evaluation.protocols import PROTOCOLS
from inflow_jax.gates import BATCH_TESTS, COMBINATIONS, check_components
from inflow_jax.gates.conformal import check_density_size
from inflow_jax.gates.semantic import resolved_scores
from inflow_jax.training.flow import check_train_config
from inflow_jax.training.optimizer import check_optimizer_config
from inflow_jax.utils.checks import check_test_size

MODES = ("train", "evaluate", "all")


def schema() -> ml_collections.ConfigDict:
  """configs/default.py's config: no config may have a key it lacks (values may differ)."""
  return default_config.get_config()


def check_config_keys(
  config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, prefix: str = "config"
) -> None:
  """Raises KeyError naming the first key of `config` that the schema does not have."""
  for key in config:
    where = f"{prefix}.{key}"
    if key not in reference:
      raise KeyError(
        f"{where} is not a config key; known keys of {prefix}: {sorted(reference.keys())}"
      )
    if isinstance(config[key], ml_collections.ConfigDict):
      if not isinstance(reference[key], ml_collections.ConfigDict):
        raise KeyError(f"{where} must be a value, not a group")
      check_config_keys(config[key], reference[key], where)


def check_config(config: ml_collections.ConfigDict, mode: str) -> None:
  """Every check that needs no data: keys, mode, train settings against the device count."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  check_config_keys(config, schema())
  if config.checkpoint_path is not None and mode == "train":
    raise ValueError(
      f"config.checkpoint_path={config.checkpoint_path!r} is a pretrained model: there is "
      "nothing to train; use --mode=evaluate"
    )
  if mode != "evaluate" and config.checkpoint_path is None:
    check_train_config(config.train, jax.device_count(), jax.process_count())
    if config.train.num_steps < 1:
      raise ValueError(
        f"train.num_steps={config.train.num_steps} trains nothing: the evaluation would "
        "score an untrained flow; give num_steps >= 1, or config.checkpoint_path"
      )
  if mode != "train":
    check_evaluation_config(config)
    check_encoder_config(config)
    if not config.data.ood:
      raise ValueError("data.ood is empty: give at least one OOD dataset")
    if config.adversarial.enabled:
      check_attack_config(config.adversarial.attack, tuple(config.data.ood))
      if (
        "conformal" in config.adversarial.attack.adaptive_targets and config.attention.kind == "mmd"
      ):
        raise ValueError(
          "adversarial.attack.adaptive_targets has 'conformal', which attacks the "
          "conformal attention: set attention.kind to 'conformal' or 'combined'"
        )
      if "mean_shift" in config.adversarial.attack.adaptive_targets and (
        config.attention.kind != "combined" or mean_shift_components(config) is None
      ):
        raise ValueError(
          "adversarial.attack.adaptive_targets has 'mean_shift', which attacks the "
          "combined gate's mean-shift test: set attention.kind to 'combined' (with "
          "attention.mean_shift_components)"
        )
      if attacks_classifier(config):  # trained on this process's devices (the evaluation's)
        classifier_lib.check_classifier_train_config(
          config.adversarial.train, jax.local_device_count(), prefix="adversarial.train"
        )


def check_encoder_config(config: ml_collections.ConfigDict) -> None:
  """config.encoder (when enabled): its optimiser, loss and shape settings, and a per-image gate
  for its statistics to join; attention.encoder 'trained' only with it."""
  c = config.encoder
  if config.attention.encoder not in MMD_ENCODERS:
    raise ValueError(
      f"attention.encoder must be {' or '.join(map(repr, MMD_ENCODERS))}, got "
      f"{config.attention.encoder!r}"
    )
  if config.attention.encoder == "trained" and not c.enabled:
    raise ValueError(
      "attention.encoder='trained' embeds the MMD test's images with the trained encoder: set "
      "encoder.enabled=True"
    )
  if not c.enabled:
    return
  if config.attention.kind == "mmd":
    raise ValueError(
      "encoder.enabled: the trained encoder's score joins the per-image score; set "
      "attention.kind to 'conformal' or 'combined' (with data.calibration_split)"
    )
  check_optimizer_config(c.train, jax.local_device_count(), prefix="encoder.train", min_steps=1)
  if not 0.0 <= c.label_smoothing < 1.0:
    raise ValueError(f"encoder.label_smoothing must lie in [0, 1), got {c.label_smoothing}")
  if not 0.0 <= c.rotation_fraction <= 1.0 or c.rotation_weight < 0.0:
    raise ValueError(
      f"encoder.rotation_fraction must lie in [0, 1] and encoder.rotation_weight be >= 0, got "
      f"{c.rotation_fraction}, {c.rotation_weight}"
    )
  if c.translate < 0 or not c.model.widths or min(c.model.widths) < 1 or c.model.stem_width < 1:
    raise ValueError(
      f"encoder.translate must be >= 0 and encoder.model's widths positive, got {c.translate}, "
      f"{c.model.stem_width}, {tuple(c.model.widths)}"
    )
  for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if c.train[name] < 1:
      raise ValueError(f"encoder.train.{name} must be >= 1, got {c.train[name]}")
  try:
    resolved_scores(c.semantic_score, 1)  # the names; whether the data have labels comes later
  except ValueError as error:
    raise ValueError(f"encoder.{error}") from None


def check_evaluation_config(config: ml_collections.ConfigDict) -> None:
  """The attention and evaluation settings, and their cross-checks, before any work."""
  settings, e = config.attention, config.eval
  if settings.n_reference < 2:
    raise ValueError(f"attention.n_reference must be >= 2, got {settings.n_reference}")
  try:
    check_test_size(settings.n_permutations, settings.level)
  except (TypeError, ValueError) as error:
    raise type(error)(f"attention.n_permutations / attention.level: {error}") from error
  if settings.sigma is not None and not settings.sigma > 0:
    raise ValueError(
      f"attention.sigma must be > 0 (or None: the median heuristic), got {settings.sigma}"
    )
  for name, allowed in (
    ("kind", ATTENTION_KINDS),
    ("batch_test", BATCH_TESTS),
    ("combination", COMBINATIONS),
  ):
    if settings[name] not in allowed:
      raise ValueError(f"attention.{name} must be one of {allowed}, got {settings[name]!r}")
  conformal_kind = settings.kind != "mmd"
  if conformal_kind and not config.data.calibration_split:
    raise ValueError(
      f"attention.kind={settings.kind!r} needs data.calibration_split: held-out images "
      "of data.test's dataset, disjoint from the test and training images"
    )
  if config.data.get("density_split") and not conformal_kind:
    raise ValueError(
      "data.density_split is for the conformal density; attention.kind='mmd' has none"
    )
  check_density_settings(config)
  check_jpeg_quality(config.data.jpeg_quality)
  if not e.protocols or set(e.protocols) - set(PROTOCOLS):
    raise ValueError(
      f"eval.protocols must be a non-empty subset of {PROTOCOLS}, got {tuple(e.protocols)}"
    )
  sizes = [("eval.batch_size", e.batch_size)]
  if "mixed" in e.protocols:
    sizes += [(f"eval.mixed_batch_sizes[{i}]", m) for i, m in enumerate(e.mixed_batch_sizes)]
  for name, m in sizes:
    if m < (1 if conformal_kind and name != "eval.batch_size" else 2):
      raise ValueError(f"{name}={m}: the attention test needs batches of at least 2 images")
    if m > settings.n_reference:
      raise ValueError(
        f"{name}={m} exceeds attention.n_reference={settings.n_reference}: the test "
        "needs at least as many reference images as batch images"
      )


def density_components(config: ml_collections.ConfigDict):
  """attention.n_components as `fit_density` takes it: None -> "auto"."""
  n_components = config.attention.n_components
  return "auto" if n_components is None else n_components


def mean_shift_components(config: ml_collections.ConfigDict):
  """attention.mean_shift_components as the detector takes it: 0 (settable on the command line) or
  None -> None, no mean-shift test."""
  return config.attention.get("mean_shift_components") or None


def check_density_settings(config: ml_collections.ConfigDict) -> None:
  """attention.n_components, attention.mean_shift_components and attention.n_density, and the latter
  against data.density_split."""
  settings = config.attention
  try:
    check_components(density_components(config))
  except ValueError as error:
    raise ValueError(f"attention.n_components: {error}") from error
  components = settings.get("mean_shift_components")
  if components is not None and (
    isinstance(components, bool) or not isinstance(components, int) or components < 0
  ):
    raise ValueError(
      f"attention.mean_shift_components must be an int >= 0 (0 or None: no mean-shift "
      f"test), got {components!r}"
    )
  components = mean_shift_components(config)
  if settings.kind == "combined" and components is not None and components >= settings.n_reference:
    raise ValueError(
      f"attention.mean_shift_components={components} needs more reference images than "
      f"components, got attention.n_reference={settings.n_reference}"
    )
  n_density = settings.get("n_density")
  if n_density is None:
    return
  if settings.kind == "mmd":
    raise ValueError(
      "attention.n_density is for the conformal density; attention.kind='mmd' has none"
    )
  if config.data.get("density_split"):
    raise ValueError(
      f"attention.n_density={n_density} and data.density_split="
      f"{config.data.density_split!r} both say where the density is fitted: give one"
    )
  if isinstance(n_density, bool) or int(n_density) != n_density:
    raise ValueError(f"attention.n_density must be an int, got {n_density!r}")
  check_density_size(n_density, density_components(config), "images (attention.n_density)")


def attacks_classifier(config: ml_collections.ConfigDict) -> bool:
  """Whether the job trains and attacks the classifier (adversarial.enabled, epsilons given)."""
  return bool(config.adversarial.enabled and config.adversarial.attack.epsilons)
