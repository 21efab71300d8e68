"""Per-image statistics for the conformal attention: the flow's per-scale prior terms and PNG
lengths.

For an L-scale flow with z = (z_0, ..., z_{L-1}) (the parts that leave each level,
`InFlow.statistics`) and D = H*W*C, an image x in [0, 1] (8-bit values, not dequantized) gets the
L' + 2 features

    f_l(x)      = -log N(z_l; 0, I) / (D log 2)  (l < L': the bits/dim each scale's prior pays)
    f_L'(x)     = 8 |PNG(x)| / D                 (input complexity, Serra et al. 2020)
    f_{L'+1}(x) = 8 |PNG(pool(x))| / (D / 4)     (the same at half resolution: pool = the 2x2 mean,
                                                  rounded to 8 bits)

with L' = L - 1 for a multi-scale flow (L > 1) and L' = 1 for a single-scale one. The last level's
prior term is left out because that is where the flow memorises its training images, on which the
density is fitted by default: on the Glow fixture, f_{L-1} tells training from unseen CIFAR-10
images apart (-log N(z_{L-1}) lower on training images) and no other statistic does (the per-block
log-dets, the other prior terms, the PNG lengths). A density fitted on the training images then
finds unseen in-distribution images atypical along f_{L-1}, which costs the conformal p-values their
power.

Why these: the half-resolution PNG length raised the per-image AUROCs and the one-outlier power,
leaving f_{L-1} out raised the one-outlier power and brought the false alarms back to the level, and
the other statistics tried (other resolutions, JPEG and WebP lengths, per-block log-dets, the random
encoder's embedding, coarse colours) lowered SVHN's or helped little (measurements:
docs/results.md).

The flow runs on fixed-size chunks (the last one zero-padded), so an image's features do not depend
on how the caller batched x.
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.data.png import png_bits_per_dim
from inflow_jax.model import InFlow
from inflow_jax.model.density import CONVENTIONS, exact_log_det, scores_from_terms
from inflow_jax.utils.batching import fixed_size

CHUNK = 250  # images per jitted flow call


def n_prior_features(num_scales: int) -> int:
  """L': how many of an L-scale flow's prior terms are features (all but the last level's when
  L > 1)."""
  return max(num_scales - 1, 1)


def n_features(model: InFlow) -> int:
  """L' + 2: the length of an image's feature vector under `model`."""
  return n_prior_features(model.num_scales) + 2


def scale_bits(stats, dims: int) -> jax.Array:
  """(B, L') f_0..f_{L'-1} from `InFlow.statistics` of D-dimensional images (traceable)."""
  log_prior = stats["log_prior_scales"]
  return -log_prior[:, : n_prior_features(log_prior.shape[1])] / (dims * np.log(2.0))


@functools.partial(jax.jit, static_argnames=("model",))
def _flow_pass(model, variables, x):
  """(scale bits, {convention: score at a = 1}): both conventions, so one compilation serves all."""
  stats = model.apply(variables, x, 1.0, method=InFlow.statistics)
  dims = int(np.prod(x.shape[1:]))
  sq_norm, log_det = (
    jnp.sum(stats["sq_norm_scales"], axis=1),
    jnp.sum(stats["log_det_blocks"], axis=1),
  )
  return scale_bits(stats, dims), {
    c: scores_from_terms(sq_norm, log_det, dims, c) for c in CONVENTIONS
  }


def mean_pool(x):
  """(N, H // 2, W // 2, C): the 2x2 means of x (an odd last row / column dropped); numpy or jax."""
  n, height, width, channels = x.shape
  x = x[:, : height - height % 2, : width - width % 2]
  return x.reshape(n, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))


def half_resolution(x: np.ndarray) -> np.ndarray:
  """(N, H // 2, W // 2, C): `mean_pool(x)` rounded to 8 bits."""
  return np.round(mean_pool(np.ascontiguousarray(x)) * 255.0) / 255.0  # the same for any layout


def complexity_bits(x: np.ndarray) -> np.ndarray:
  """(N, 2) f_L, f_{L+1}: the PNG bits/dim of x and of its half-resolution copy
  (not differentiable)."""
  return np.stack([png_bits_per_dim(x), png_bits_per_dim(half_resolution(x))], axis=1)


def flow_features(
  model, variables, x: np.ndarray, convention: str = "nll", chunk: int = CHUNK
) -> Tuple[np.ndarray, np.ndarray]:
  """((N, L' + 2) the features of the module docstring, (N,) the flow's `convention` score at a = 1)
  of x (N, H, W, C) float32 in [0, 1] (unchecked): one pass of the flow in chunks of `chunk` images,
  the PNG lengths computed on the host while the flow runs."""
  (bits, scores), complexity = fixed_size(
    lambda xb: _flow_pass(exact_log_det(model), variables, xb),
    x,
    chunk,
    host_work=lambda: complexity_bits(x),
  )
  return np.concatenate([bits.astype(np.float64), complexity], axis=1), scores[convention]


def image_features(model, variables, x: np.ndarray) -> np.ndarray:
  """(N, L' + 2) features of the module docstring for x (N, H, W, C) float32 in [0, 1]."""
  return flow_features(model, variables, x)[0]
