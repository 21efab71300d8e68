"""The MMD test's embedding by a trained encoder (`gates.trained_embedder`): the encoder's
flip-averaged features (against `encode`), in chunks and under an enclosing jit, and the MMD test on
them equals the test of those features."""

import jax
import numpy as np
import pytest

from inflow_jax import gates
from inflow_jax.gates.trained_embedder import TrainedEmbedder
from inflow_jax.model import ClassifierEncoder, TrainedEncoder
from inflow_jax.model.classifier_encoder import encode

X = np.random.default_rng(0).random((23, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
  model = ClassifierEncoder(num_classes=3, stem_width=4, widths=(8, 16))
  return TrainedEncoder(model, jax.jit(model.init)(jax.random.PRNGKey(0), X[:2]))


def test_the_embedding_is_the_features_in_chunks_and_the_mmd_test_on_it_their_test(trained):
  expected = encode(trained.model, trained.variables, X, batch_size=5).features
  embedder = TrainedEmbedder.of(trained, chunk_size=4)  # 6 chunks, the last padded
  np.testing.assert_allclose(embedder(X), expected, rtol=1e-5, atol=1e-6)
  traced = jax.jit(lambda e, x: e(x))(embedder, X)  # inside an enclosing jit (the attacks)
  np.testing.assert_allclose(traced, expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="x"):
    embedder(X * 2.0)
  state = gates.fit_mmd(X[:16], embedder, n_permutations=30)
  reference = gates.fit_mmd_embedded(embedder(X[:16]), None, n_permutations=30)
  np.testing.assert_allclose(state.sigma, reference.sigma, rtol=1e-6)
  key = jax.random.PRNGKey(3)
  got = gates.mmd_test(state, X[16:], key)
  want = gates.mmd_test_embedded(reference, embedder(X[16:]), key)
  assert float(got.p_value) == float(want.p_value)
  np.testing.assert_allclose(got.mmd2, want.mmd2, rtol=1e-4, atol=1e-7)
