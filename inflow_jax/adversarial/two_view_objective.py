"""The adaptive attack's objective on the two-view per-image score (`inflow_jax.gates.semantic`).

The detector flags x when Fisher's statistic T(x) = -log p_pix(x) - log p_sem(x) of its two
conformal p-values is large. The p-values are step functions of the scores; the attack ascends
the smoothed statistic instead,

    T~(x) = -sum_v log p~_v(x),   p~_v(x) = mean_i sigmoid((c_{v,i} - s_v(x)) / h_v),

with c_v the view's calibration scores, h_v = IQR(c_v) / 10, s_pix the pixel flow's per-image
score (`objectives.image_score`, PNG lengths held at the clean image's: BPDA) and s_sem the
semantic score of the encoder's flip-averaged features (ViM, or the feature flow's NLL of the
normalised, standardised features): white-box through the encoder, the semantic score and the
pixel flow. p~_v -> p_v as h_v -> 0; log-sigmoid and log-mean-exp keep a
gradient where x lies beyond every calibration score (p~ ~ exp(-(s - max c) / h) there).
"""

import dataclasses
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.adversarial.objectives import image_score
from inflow_jax.model.classifier_encoder import averaged_outputs
from inflow_jax.model.feature_flow import nll as feature_nll

BANDWIDTH_FRACTION = 0.1  # h_v = this x the interquartile range of the view's calibration scores


def semantic_score(encoder, feature_model, x: jax.Array, views: Dict[str, Any]) -> jax.Array:
  """(B,) s_sem(x) (traceable): `gates.semantic.semantic_scores` as one differentiable function;
  feature_model: the feature flow's module, or None for the ViM score."""
  features = averaged_outputs(encoder, views["encoder_variables"], x).features
  if feature_model is None:  # ViM: alpha ||(f - u) R|| - logsumexp(f W + b)
    residual = jnp.linalg.norm((features - views["origin"]) @ views["residual_basis"], axis=1)
    logits = features @ views["kernel"] + views["bias"]
    return views["alpha"] * residual - jax.scipy.special.logsumexp(logits, axis=1)
  features = features / jnp.maximum(jnp.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  u = (features - views["mean"]) / views["std"]
  return feature_nll(feature_model, views["flow_variables"], u, 1.0, per_dimension=True)


def semantic_model(semantic):
  """`semantic_score`'s feature_model for a fitted semantic view (None for ViM)."""
  return None if semantic.score == "vim" else semantic.feature_flow.model


def smoothed_neg_log_p(scores: jax.Array, calibration: jax.Array, bandwidth) -> jax.Array:
  """(B,) -log p~(s) of the module docstring for calibration scores c (n,)."""
  log_terms = jax.nn.log_sigmoid((calibration[None, :] - scores[:, None]) / bandwidth)
  return jnp.log(calibration.shape[0]) - jax.scipy.special.logsumexp(log_terms, axis=1)


def two_view_arrays(conformal_state) -> Dict[str, Any]:
  """The arrays `LowerTwoViewScore` reads (its `views` argument) from a conformal state with a
  semantic view."""
  semantic, calibration = conformal_state.semantic, conformal_state.view_calibration
  bandwidths = {
    v: BANDWIDTH_FRACTION * float(np.subtract(*np.percentile(calibration[v], [75, 25])))
    for v in ("pixel", "semantic")
  }
  if semantic.score == "vim":
    score_arrays = {k: np.asarray(v, np.float32) for k, v in semantic.vim._asdict().items()}
  else:
    flow = semantic.feature_flow
    score_arrays = {"flow_variables": flow.variables, "mean": flow.mean, "std": flow.std}
  arrays = {
    "encoder_variables": semantic.encoder_variables,
    **score_arrays,
    **{f"{v}_calibration": np.asarray(calibration[v], np.float32) for v in bandwidths},
    **{f"{v}_bandwidth": np.float32(max(h, 1e-6)) for v, h in bandwidths.items()},
  }
  return jax.tree.map(jnp.asarray, arrays)


@dataclasses.dataclass(frozen=True)
class LowerTwoViewScore:
  """Objective -T~(x) (B,), `loss_args=(variables, density, complexity, views)`: the pixel flow's
  variables, its density, the clean images' (B, 2) PNG bits/dim and `two_view_arrays(state)`.
  pixel_model: the flow with the exact log-det (`model.density.exact_log_det`); encoder and
  feature_model: the semantic view's modules (`semantic_model`: None for ViM)."""

  pixel_model: Any
  encoder: Any
  feature_model: Any

  def __call__(self, x, variables, density, complexity, views) -> jax.Array:
    pixel = image_score(self.pixel_model, x, variables, density, complexity)
    semantic = semantic_score(self.encoder, self.feature_model, x, views)
    return -(
      smoothed_neg_log_p(pixel, views["pixel_calibration"], views["pixel_bandwidth"])
      + smoothed_neg_log_p(semantic, views["semantic_calibration"], views["semantic_bandwidth"])
    )
