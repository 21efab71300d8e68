"""The in-distribution encoder's training (`training.encoder`, `training.encoder_loss`): the loss
against a direct computation, learning a toy task, exact resume (batch-norm statistics included),
rotation prediction alone without labels."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from inflow_jax.data import augment
from inflow_jax.model.classifier_encoder import ClassifierEncoder, encode
from inflow_jax.training.encoder import accuracy, train_encoder
from inflow_jax.training.encoder_loss import EncoderLoss

MODEL = ClassifierEncoder(num_classes=2, stem_width=4, widths=(8, 8))


def _stripes(n: int, seed: int = 0):
  """Class 0: horizontal stripes, class 1: vertical ones, random phase and noise (8x8)."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  phase = rng.integers(0, 2, n)
  rows = (np.arange(8)[None, :, None] + phase[:, None, None]) % 2
  cols = (np.arange(8)[None, None, :] + phase[:, None, None]) % 2
  pattern = np.where(y[:, None, None] == 0, rows + 0 * cols, cols + 0 * rows)
  x = 0.2 + 0.6 * pattern[..., None] + 0.1 * rng.random((n, 8, 8, 3))
  return x.astype(np.float32), y.astype(np.int32)


def _config(num_steps=30):
  config = default.get_config()
  config.encoder.train.update(
    num_steps=num_steps,
    batch_size=16,
    learning_rate=0.05,
    b1=0.9,  # the toy's own optimiser (the defaults are tuned for CIFAR-10)
    weight_decay=5e-4,
    norm_bias_lr_scale=1.0,
    warmup_steps=2,
    schedule="constant",  # independent of num_steps: a shorter run is a prefix of a longer one
    decay_steps=0,
    lookahead_every=0,  # (its averaging depends on num_steps)
    log_every=3,
    eval_every=0,
    checkpoint_every=3,
  )
  return config


def test_loss_is_smoothed_cross_entropy_plus_weighted_rotation_loss():
  x, y = _stripes(8)
  variables = jax.jit(MODEL.init)(jax.random.PRNGKey(0), x)
  loss = EncoderLoss(MODEL, label_smoothing=0.2, rotation_weight=0.5, rotation_fraction=0.25)
  value, updated = jax.jit(loss)(variables, (jnp.asarray(x), jnp.asarray(y)), 5)
  key = jax.random.fold_in(jax.random.PRNGKey(0), 5)
  augment_key, rotation_key = jax.random.split(key)
  xa = augment.augment(augment_key, x, 2)
  k = jax.random.randint(rotation_key, (2,), 0, 4)
  inputs = jnp.concatenate([xa, augment.rotate90(xa[:2], k)])
  apply = jax.jit(lambda v, xb: MODEL.apply(v, xb, train=True, mutable=["batch_stats"]))
  out, _ = apply(variables, inputs)
  log_p = np.asarray(jax.nn.log_softmax(out.class_logits[:8]), np.float64)
  targets = 0.8 * np.eye(2)[y] + 0.2 / 2
  class_loss = -np.mean(np.sum(targets * log_p, -1))
  log_r = np.asarray(jax.nn.log_softmax(out.rotation_logits[8:]))
  rotation_loss = -np.mean(log_r[np.arange(2), np.asarray(k)])
  assert float(value) == pytest.approx(class_loss + 0.5 * rotation_loss, rel=1e-5)
  assert set(updated) == {"batch_stats"}
  # rotation_fraction 0: the class term alone, on the augmented images only (a plain classifier)
  plain = EncoderLoss(MODEL, label_smoothing=0.2, rotation_weight=0.5, rotation_fraction=0.0)
  value, _ = jax.jit(plain)(variables, (jnp.asarray(x), jnp.asarray(y)), 5)
  out, _ = apply(variables, xa)
  log_p = np.asarray(jax.nn.log_softmax(out.class_logits), np.float64)
  assert float(value) == pytest.approx(-np.mean(np.sum(targets * log_p, -1)), rel=1e-5)


def test_encoder_learns_a_toy_task_and_resumes_exactly(tmp_path):
  x, y = _stripes(256)
  x_test, y_test = _stripes(200, seed=1)
  whole = train_encoder(MODEL, x, y, _config(30), tmp_path / "whole", progress=False)
  first = train_encoder(MODEL, x, y, _config(12), tmp_path / "split", progress=False)
  resumed = train_encoder(MODEL, x, y, _config(30), tmp_path / "split", progress=False)
  assert first.losses.shape == (12,)
  assert list(resumed.steps) == list(range(13, 31))
  for a, b in zip(jax.tree.leaves(whole.variables), jax.tree.leaves(resumed.variables)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert accuracy(MODEL, whole.variables, x_test, y_test) >= 0.95
  out = encode(MODEL, whole.variables, x_test[:5])
  assert out.class_logits.shape == (5, 2) and out.features.shape == (5, 8)


def test_without_labels_only_rotations_are_learned(tmp_path):
  x, _ = _stripes(128)
  model = ClassifierEncoder(num_classes=0, stem_width=4, widths=(8, 8))
  result = train_encoder(model, x, None, _config(9), tmp_path, progress=False)
  assert np.all(np.isfinite(result.losses))
  assert encode(model, result.variables, x[:3]).class_logits.shape == (3, 0)


def test_held_out_accuracy_is_logged_every_eval_every_steps(tmp_path):
  """eval_every need not be a multiple of log_every: steps 5 and the last (6) are evaluated."""
  x, y = _stripes(64)
  config = _config(6)
  config.encoder.train.eval_every = 5
  train_encoder(MODEL, x, y, config, tmp_path, eval_set=_stripes(20, seed=1), progress=False)
  records = [json.loads(line) for line in (tmp_path / "encoder_metrics.jsonl").open()]
  assert [r["step"] for r in records if "eval_accuracy" in r] == [5, 6]
  assert [r["step"] for r in records] == [3, 5, 6]
