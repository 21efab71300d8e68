"""The job's config checks (`inflow_jax.app.config_checks`, run first by `run_job`): every bad
setting fails naming the key before any training or writing, the mean-shift components' off
values, and the shipped Glow variants pass."""

import numpy as np
import pytest

from configs import cifar10_glow, tiny
from inflow_jax.app import config_checks, job
from inflow_jax.app.config_checks import check_config


def _plain_cases(tmp_path):
  """(config, mode, error, message) of bad data, model, checkpoint and key settings."""
  unknown_ood = tiny.get_config()
  unknown_ood.data.ood = ("uniform_noise", "no_such_dataset")
  unknown_train = tiny.get_config()
  unknown_train.data.train = "no_such_dataset"
  indivisible = tiny.get_config()
  indivisible.train.batch_size = 12
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip file")
  unreadable = tiny.get_config()
  unreadable.checkpoint_path = str(garbage)
  missing = tiny.get_config()
  missing.checkpoint_path = str(tmp_path / "absent.npz")
  typo = tiny.get_config()
  typo.train.learning_rat = 0.1  # a key the schema does not have
  nested_typo = tiny.get_config()
  nested_typo.model.widht = 4
  return [
    (unknown_ood, "all", ValueError, "no_such_dataset"),
    (unknown_train, "train", ValueError, "no_such_dataset"),
    (indivisible, "all", ValueError, "not divisible by the number of devices"),
    (unreadable, "evaluate", ValueError, "unreadable"),
    (missing, "all", ValueError, "unreadable"),
    (unreadable, "train", ValueError, "nothing to train"),
    (typo, "all", KeyError, "config.train.learning_rat is not a config key"),
    (nested_typo, "all", KeyError, "config.model.widht"),
  ]


def _adversarial_cases(tmp_path):
  """(config, mode, error, message) of bad adversarial settings."""
  cases = [
    (
      "attack",
      dict(epsilons=(8 / 255, -1 / 255)),
      r"adversarial.attack.epsilons\[1\]: epsilon must be",
    ),
    ("attack", dict(num_steps=0), "adversarial.attack.num_steps"),
    ("attack", dict(adaptive_num_steps=-2), "adversarial.attack.adaptive_num_steps"),
    ("attack", dict(adaptive_step_size=0.0), "adversarial.attack.adaptive_step_size"),
    ("attack", dict(adaptive_ood=("no_such_set",)), "adversarial.attack.adaptive_ood names"),
    ("train", dict(num_steps=0), "adversarial.train.num_steps must be >= 1"),
    ("train", dict(batch_size=12), "adversarial.train.batch_size=12 is not"),
    ("model", dict(num_classes=5), "adversarial.model.num_classes"),
  ]
  out = []
  for group, setting, message in cases:
    config = tiny.get_config()
    config.adversarial.enabled = True
    config.adversarial[group].update(setting)
    out.append((config, "all", ValueError, message))
  unlabelled = tmp_path / "unlabelled.npy"
  np.save(unlabelled, np.random.default_rng(0).integers(0, 256, (320, 32, 32, 3), np.uint8))
  labels = tiny.get_config()
  labels.adversarial.enabled = True
  labels.data.train = f"npy:{unlabelled}"
  message = r"data.train='npy:.*' split 'train\[:256\]' has none"
  return out + [(labels, "all", ValueError, message)]


HELD_OUT = dict(calibration_split="test[-100:]", test_split="test[:-100]")
CONFORMAL_CASES = [  # (attention settings, data settings, message)
  (dict(kind="kde"), {}, r"attention.kind must be one of \('mmd', 'conformal'"),
  (dict(kind="combined"), {}, "needs data.calibration_split"),
  ({}, dict(jpeg_quality=100), r"jpeg_quality must be None \(off\) or an integer in \[1, 95\]"),
  (
    dict(kind="conformal"),
    dict(calibration_split="train[200:300]", test="digits"),
    r"56 calibration images also appear in the training images",
  ),
  ({}, dict(density_split="test[:50]"), r"data.density_split is for the conformal density"),
  (
    dict(kind="conformal"),
    dict(density_split="test[:50]", **HELD_OUT),
    r"50 images of data.density_split='test\[:50\]' also appear in the test images",
  ),
  (
    dict(kind="conformal"),
    dict(
      density_split="test[-110:-100]", calibration_split="test[-100:]", test_split="test[:-110]"
    ),
    r"n_components='auto' needs at least 13 images of "
    r"data.density_split='test\[-110:-100\]', got 10",
  ),
  (
    dict(kind="conformal", n_components=0),
    HELD_OUT,
    r"attention.n_components: n_components must be a positive int or 'auto', got 0",
  ),
  (
    dict(kind="combined", mean_shift_components=64),
    HELD_OUT,
    r"attention.mean_shift_components=64 needs more reference images than components, "
    r"got attention.n_reference=64",
  ),
  (
    dict(kind="combined", mean_shift_components=-1),
    HELD_OUT,
    r"attention.mean_shift_components must be an int >= 0 \(0 or None: no mean-shift test\), "
    r"got -1",
  ),
  (
    dict(kind="conformal", n_density=100),
    dict(calibration_split="test[-100:]", density_split="test[:50]"),
    r"attention.n_density=100 and data.density_split='test\[:50\]' both say",
  ),
  (
    dict(kind="conformal", n_density=10**6),
    HELD_OUT,
    r"attention.n_density=1000000 exceeds the 256 images",
  ),
]


def _conformal_cases():
  """(config, mode, error, message) of bad settings of the conformal gates."""
  out = []
  for attention, data, message in CONFORMAL_CASES:
    config = tiny.get_config()
    config.attention.update(attention)
    config.data.update(data)
    out.append((config, "all", ValueError, message))
  target = tiny.get_config()  # the attack needs the combined gate's test
  target.attention.kind = "conformal"
  target.data.update(HELD_OUT)
  target.adversarial.enabled = True
  target.adversarial.attack.adaptive_targets = ("mean_shift",)
  message = r"adaptive_targets has 'mean_shift', which attacks the combined gate's mean-shift test"
  semantic = tiny.get_config()
  semantic.attention.kind = "conformal"
  semantic.data.update(HELD_OUT)
  semantic.encoder.update(enabled=True, semantic_score="knn")
  semantic_message = r"encoder.semantic_score must be 'auto' or distinct names of"
  trained_mmd = tiny.get_config()  # the MMD test on the trained encoder's features needs one
  trained_mmd.attention.update(kind="combined", encoder="trained")
  trained_mmd.data.update(HELD_OUT)
  unknown_mmd = tiny.get_config()
  unknown_mmd.attention.encoder = "pixels"
  return out + [
    (target, "all", ValueError, message),
    (semantic, "all", ValueError, semantic_message),
    (trained_mmd, "all", ValueError, r"attention.encoder='trained' embeds .* encoder.enabled=True"),
    (
      unknown_mmd,
      "all",
      ValueError,
      r"attention.encoder must be 'random' or 'trained', got 'pixels'",
    ),
  ]


def test_errors_before_any_training(tmp_path):
  cases = _plain_cases(tmp_path) + _adversarial_cases(tmp_path) + _conformal_cases()
  assert len(cases) == 33
  for i, (config, mode, error, message) in enumerate(cases):
    workdir = tmp_path / f"case{i}"
    with pytest.raises(error, match=message):
      job.run_job(config, workdir, mode, progress=False)
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists(), i


def test_mean_shift_components_zero_or_none_turns_the_test_off():
  """0 (what the command line can set) and None mean no mean-shift test; both pass the checks."""
  config = tiny.get_config()
  config.attention.kind = "combined"
  config.data.update(calibration_split="test[-100:]", test_split="test[:-100]")
  for value, expected in ((0, None), (None, None), (8, 8)):
    config.attention.mean_shift_components = value
    config_checks.check_evaluation_config(config)
    assert config_checks.mean_shift_components(config) == expected


def test_bad_settings_fail_before_anything_is_written(tmp_path):
  cases = [
    ("level", dict(attention=dict(level=1.5)), "attention.level|level must lie in"),
    ("never_rejects", dict(attention=dict(n_permutations=10)), "can never reject"),
    ("reference", dict(attention=dict(n_reference=8)), "eval.batch_size=16 exceeds"),
    ("untrained", dict(train=dict(num_steps=0)), "trains nothing"),
    ("protocols", dict(eval=dict(protocols=("paper,strict",))), "eval.protocols must be"),
    ("small_test", dict(data=dict(max_eval_images=10)), "fewer than eval.batch_size=16"),
    ("no_heldout", dict(data=dict(heldout_split=None)), "needs held-out"),
    ("warmup", dict(train=dict(warmup_steps=6)), "warmup_steps=6 must lie in"),
    ("clip", dict(train=dict(clip_norm=0.0)), "clip_norm must be > 0"),
    ("eval_every", dict(train=dict(eval_every=3)), "multiple of train.log_every"),
    ("empty_eval", dict(train=dict(eval_every=2, eval_split="train[300:300]")), "eval"),
  ]
  for name, groups, message in cases:
    config = tiny.get_config()
    for group, values in groups.items():
      config[group].update(values)
    workdir = tmp_path / name
    with pytest.raises((ValueError, TypeError), match=message):
      job.run_job(config, workdir, "all", progress=False)
    if name in (
      "small_test",
      "no_heldout",
      "empty_eval",
    ):  # found once the data are loaded: nothing written yet
      assert not list(workdir.iterdir()), name
    else:  # found from the config alone: no workdir at all
      assert not workdir.exists(), name
  blocked = tmp_path / "a_file"
  blocked.write_text("not a directory")
  with pytest.raises(PermissionError, match="not writable"):
    job.run_job(tiny.get_config(), blocked / "workdir", "all", progress=False)


@pytest.mark.parametrize("variant", cifar10_glow.VARIANTS)
def test_glow_config_variants_pass_the_job_checks_and_differ_only_in_the_recipe(variant):
  config = cifar10_glow.get_config(variant)
  check_config(config, "all")
  default = cifar10_glow.get_config()
  assert config.train.batch_size == 64 and config.train.loss == "bpd"
  assert dict(config.model) == dict(default.model) and not default.model.zero_init
  if variant == "script":  # the fixture script's recipe: constant lr 1e-3, no EMA, no skipping
    assert config.train.learning_rate == 1e-3
    assert (config.train.schedule, config.train.ema_decay, config.train.skip_factor) == (
      "constant",
      None,
      None,
    )
  else:
    assert config.train.skip_factor is not None
  if variant == "accelerator":
    assert config.train.num_steps > 10 * default.train.num_steps
