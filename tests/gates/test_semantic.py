"""The semantic view's rotation score and the rule that adds it by default: an encoder whose
rotation head tells the four turns of the fit images apart (checked on hand-made heads whose
accuracy is known: a head reading which edge is bright, and a constant one), and the score against
numpy's log-softmax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from inflow_jax.gates import semantic as semantic_lib
from inflow_jax.model.classifier_encoder import EncoderOutput


class EdgeEncoder(nn.Module):
  """Features: the 4 edges' means; class logits: a dense map of them; rotation logits: the mean of
  the top, left, bottom and right edge (np.rot90 by k quarter turns moves the top edge to these),
  times `sharpness` (0: a head that never learned rotations, constant logits)."""

  sharpness: float = 10.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    edges = jnp.stack(
      [
        x[:, 0].mean((1, 2)),
        x[:, :, 0].mean((1, 2)),
        x[:, -1].mean((1, 2)),
        x[:, :, -1].mean((1, 2)),
      ],
      axis=1,
    )
    features = edges + 0.01 * nn.Dense(4)(x.reshape(len(x), -1))
    return EncoderOutput(nn.Dense(3)(features), self.sharpness * edges, features)


def _images(n: int, seed: int) -> np.ndarray:
  """(n, 8, 8, 3) images brighter towards the top edge, with noise."""
  rng = np.random.default_rng(seed)
  ramp = np.linspace(1.0, 0.0, 8, dtype=np.float32)[None, :, None, None]
  return np.clip(0.6 * ramp + 0.4 * rng.random((n, 8, 8, 3), np.float32), 0, 1).astype(np.float32)


def _encoder(sharpness):
  model = EdgeEncoder(sharpness)
  variables = model.init(jax.random.PRNGKey(0), np.zeros((2, 8, 8, 3), np.float32))
  return model, variables


def test_the_rotation_score_joins_auto_only_with_a_trained_head():
  x = _images(300, 0)
  trained, untrained = _encoder(10.0), _encoder(0.0)
  assert semantic_lib.rotation_accuracy(*trained, x) == 1.0
  assert semantic_lib.rotation_accuracy(*untrained, x) == 0.25  # argmax 0 for every turn
  assert semantic_lib.rotation_accuracy(*trained, x[:, :6]) == 0.0  # not square: no turns
  state = semantic_lib.fit_semantic(*trained, x)
  assert state.scores == ("vim", "energy", "rotation")
  assert semantic_lib.fit_semantic(*untrained, x).scores == ("vim", "energy")
  with pytest.raises(ValueError, match="needs a trained rotation head.*drop 'rotation'"):
    semantic_lib.fit_semantic(*untrained, x, score="energy+rotation")
  # the score: -log softmax(r)_0 of the flip-averaged rotation logits (numpy's log-softmax)
  new = _images(20, 1)
  model, variables = trained
  r = 0.5 * (
    np.asarray(model.apply(variables, new).rotation_logits)
    + np.asarray(model.apply(variables, new[:, :, ::-1]).rotation_logits)
  )
  got = semantic_lib.semantic_scores(state, new)["rotation"]
  np.testing.assert_allclose(got, -log_softmax(r.astype(np.float64), axis=1)[:, 0], rtol=1e-5)
  turned = semantic_lib.semantic_scores(state, np.rot90(new, 2, axes=(1, 2)).copy())["rotation"]
  assert np.all(turned > got)  # upside down: the head doubts it is upright
