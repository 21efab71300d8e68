"""The encoder's network options (`inflow_jax.model.classifier_encoder`): logit scaling, batch norm
without a scale, blocks without the skip connection, and `encode`'s test-time averages against
direct computations."""

import jax
import numpy as np

from inflow_jax.model.classifier_encoder import ClassifierEncoder, ConvBlock, encode

X = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)


def test_logit_scale_multiplies_both_heads_and_bn_scale_false_drops_gamma():
  plain = ClassifierEncoder(num_classes=3, stem_width=4, widths=(8,), bn_scale=False)
  scaled = plain.clone(logit_scale=1 / 9)
  variables = jax.jit(plain.init)(jax.random.PRNGKey(0), X)
  names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables)}
  assert not any("scale" in n for n in names) and any("BatchNorm_0']['bias" in n for n in names)
  a, b = plain.apply(variables, X), scaled.apply(variables, X)
  np.testing.assert_allclose(b.class_logits, a.class_logits / 9, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(b.rotation_logits, a.rotation_logits / 9, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(b.features, a.features)


def test_a_block_without_residual_is_its_second_branch_alone():
  """residual=False: h = GELU(BN(conv(u))); with it, u + that, u = GELU(BN(pool(conv(x))))."""
  x = np.random.default_rng(1).random((4, 8, 8, 5)).astype(np.float32)
  with_skip = ConvBlock(6, residual=True)
  variables = with_skip.init(jax.random.PRNGKey(0), x, False)
  out, state = with_skip.apply(variables, x, False, capture_intermediates=True)
  u = state["intermediates"]["NormAct_0"]["__call__"][0]
  plain = ConvBlock(6, residual=False).apply(variables, x, False)
  np.testing.assert_allclose(plain, out - u, rtol=1e-5, atol=1e-6)
  assert not np.allclose(plain, out)


def test_encode_averages_mirror_and_one_pixel_translations():
  """translate_average: o(x) / 2 + (o(shift(x, -1)) + o(shift(x, +1))) / 4 with o the flip
  average and shift a move along both axes with reflected edges (numpy)."""
  model = ClassifierEncoder(num_classes=3, stem_width=4, widths=(8,))
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), X)

  def flip_average(x):
    return 0.5 * (
      model.apply(variables, x).features + model.apply(variables, x[:, :, ::-1]).features
    )

  padded = np.pad(X, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  down, up = padded[:, :8, :8], padded[:, 2:, 2:]  # content moved by +1 and by -1
  expected = 0.5 * flip_average(X) + 0.25 * (flip_average(up) + flip_average(down))
  out = encode(model, variables, X, batch_size=4, translate_average=True)
  np.testing.assert_allclose(out.features, expected, rtol=1e-4, atol=1e-5)
  plain = encode(model, variables, X, batch_size=4, flip_average=False)
  np.testing.assert_allclose(
    plain.features, model.apply(variables, X).features, rtol=1e-5, atol=1e-6
  )
