"""The adaptive attack's objective on the two-view per-image score (`inflow_jax.gates.semantic`).

The detector flags x when the statistic T(x) of its views' conformal p-values (`gates.views`:
the pixel view's and the semantic scores', pooled or each its own) is large. The p-values are step
functions of the scores; the attack ascends the smoothed statistic instead,

    T~(x) = -log p~_pixel(x) - log p~_S(F~(x)),   F~(x) = -sum_{v in S} log p~_v(x)   (pooled)
    T~(x) = -sum_v log p~_v(x)                                     (each score a view)
    p~_v(s) = mean_i sigmoid((c_{v,i} - s) / h_v),

with c_v the view's calibration scores (c_S the calibration images' F), h_v = IQR(c_v) / 10,
s_pix the pixel flow's per-image score (`objectives.image_score`, PNG lengths held at the clean
image's: BPDA) and the semantic scores of the encoder's outputs, flip-averaged where the view's
are (ViM, energy, the rotation head's -log p(upright), the feature flow's NLL of the normalised,
standardised features): white-box through the encoder, the semantic scores and the pixel flow.
p~_v -> p_v as h_v -> 0; log-sigmoid and log-mean-exp keep a gradient where x lies beyond every
calibration score (p~ ~ exp(-(s - max c) / h) there).
"""

import dataclasses
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.adversarial.objectives import image_score
from inflow_jax.gates.views import SEMANTIC_STATISTIC
from inflow_jax.model.classifier_encoder import averaged_outputs
from inflow_jax.model.feature_flow import nll as feature_nll

BANDWIDTH_FRACTION = 0.1  # h_v = this x the interquartile range of the view's calibration scores


def semantic_score(
  encoder,
  feature_model,
  x: jax.Array,
  views: Dict[str, Any],
  scores: Tuple[str, ...],
  flip_average: bool = True,
) -> Dict[str, jax.Array]:
  """{name: (B,) s_name(x)} (traceable): `gates.semantic.semantic_scores` as one differentiable
  function; feature_model: the feature flow's module (with "feature_flow" in scores)."""
  outputs = averaged_outputs(encoder, views["encoder_variables"], x, flip_average)
  features, energy = outputs.features, -jax.scipy.special.logsumexp(outputs.class_logits, axis=1)
  out = {"energy": energy}
  if "rotation" in scores:  # -log softmax(r)_0: the rotation head's doubt that x is upright
    rotation = outputs.rotation_logits
    out["rotation"] = jax.scipy.special.logsumexp(rotation, axis=1) - rotation[:, 0]
  if "vim" in scores:  # alpha ||(f - u) R|| - logsumexp(l): W, b are the network's own head
    residual = jnp.linalg.norm((features - views["origin"]) @ views["residual_basis"], axis=1)
    out["vim"] = views["alpha"] * residual + energy
  if "feature_flow" in scores:
    unit = features / jnp.maximum(jnp.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    u = (unit - views["mean"]) / views["std"]
    nll = feature_nll(feature_model, views["flow_variables"], u, 1.0, per_dimension=True)
    out["feature_flow"] = nll
  return {name: out[name] for name in scores}


def smoothed_neg_log_p(scores: jax.Array, calibration: jax.Array, bandwidth) -> jax.Array:
  """(B,) -log p~(s) of the module docstring for calibration scores c (n,)."""
  log_terms = jax.nn.log_sigmoid((calibration[None, :] - scores[:, None]) / bandwidth)
  return jnp.log(calibration.shape[0]) - jax.scipy.special.logsumexp(log_terms, axis=1)


def two_view_arrays(conformal_state) -> Dict[str, Any]:
  """The arrays `LowerTwoViewScore` reads (its `views` argument) from a conformal state with a
  semantic view."""
  semantic, calibration = conformal_state.semantic, conformal_state.view_calibration
  pooled = (SEMANTIC_STATISTIC,) if SEMANTIC_STATISTIC in calibration else ()
  bandwidths = {
    v: BANDWIDTH_FRACTION * float(np.subtract(*np.percentile(calibration[v], [75, 25])))
    for v in ("pixel",) + tuple(semantic.scores) + pooled
  }
  arrays = {"encoder_variables": semantic.encoder_variables}
  if semantic.vim is not None:
    vim = semantic.vim
    arrays.update(origin=vim.origin, residual_basis=vim.residual_basis, alpha=vim.alpha)
  if semantic.feature_flow is not None:
    flow = semantic.feature_flow
    arrays.update(flow_variables=flow.variables, mean=flow.mean, std=flow.std)
  arrays.update({f"{v}_calibration": np.asarray(calibration[v], np.float32) for v in bandwidths})
  arrays.update({f"{v}_bandwidth": np.float32(max(h, 1e-6)) for v, h in bandwidths.items()})
  return jax.tree.map(jnp.asarray, arrays)


@dataclasses.dataclass(frozen=True)
class LowerTwoViewScore:
  """Objective -T~(x) (B,), `loss_args=(variables, density, complexity, views)`: the pixel flow's
  variables, its density, the clean images' (B, 2) PNG bits/dim and `two_view_arrays(state)`.
  pixel_model: the flow with the exact log-det (`model.density.exact_log_det`); encoder,
  feature_model (or None) and scores: the semantic view's (`for_semantic`)."""

  pixel_model: Any
  encoder: Any
  feature_model: Any
  scores: Tuple[str, ...]
  flip_average: bool = True
  pooled: bool = False  # the semantic scores pooled into one view (several of them)

  @classmethod
  def for_semantic(cls, pixel_model, semantic) -> "LowerTwoViewScore":
    """The objective on the pixel flow and a fitted `gates.semantic.SemanticState`."""
    flow = semantic.feature_flow
    feature_model = None if flow is None else flow.model
    pooled = semantic.pooled and len(semantic.scores) > 1
    encoder, scores = semantic.encoder, semantic.scores
    return cls(pixel_model, encoder, feature_model, scores, semantic.flip_average, pooled)

  def __call__(self, x, variables, density, complexity, views) -> jax.Array:
    pixel = image_score(self.pixel_model, x, variables, density, complexity)
    semantic = semantic_score(
      self.encoder, self.feature_model, x, views, self.scores, self.flip_average
    )
    neg_log_p = lambda name, s: smoothed_neg_log_p(
      s, views[f"{name}_calibration"], views[f"{name}_bandwidth"]
    )
    semantic_total = sum(neg_log_p(name, score) for name, score in semantic.items())
    if self.pooled:
      semantic_total = neg_log_p(SEMANTIC_STATISTIC, semantic_total)
    return -(neg_log_p("pixel", pixel) + semantic_total)
