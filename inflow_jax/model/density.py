"""Per-image OOD scores of an InFlow model; higher always means more OOD.

With `z, L = f_a(x)` the flow at attention a and `L = log|det dz/dx|` its **exact** log-determinant
(`a * sum(s)` for the paper's coupling blocks; computed with the model's `paper_compat=False` form,
whatever the given model's flag), and D = H*W*C:

* `convention='paper'`, the original InFlow score:
      score(x, a) = log N(z; 0, v I) - L,   v = sqrt(2) erfinv(0.95) ~ 1.96
  (v a *variance*, as the original). At a = 1 this is the original's `prior_ll - log_jac_det`; at
  a = 0 (flow = fixed permutation, L = 0) it is `prior_ll`: exactly the original's two cases (the
  original code returns the unmultiplied `sum(s)` as its log-det, which equals L at a = 1 and is
  never used at a = 0). A fractional or per-sample a is scored by the same formula with the exact L
  of the gated flow at that a. Note the sign: unlike a likelihood, this subtracts the log-det. It is
  what the paper evaluated.
* `convention='nll'`, the negative log-likelihood of the 8-bit image in **bits per dimension**:
  pixels are x = k/255 with k in {0..255}; pixel k stands for the bin
  [(k - 1/2)/255, (k + 1/2)/255] of width 1/255, so `P(k) ~= p(x) 255^-D` and
      nll(x, a) = (-log N(z; 0, I) - L + D log 255) / (D log 2).
  With a `key`, x is uniformly dequantized first, x + (u - 1/2)/255 with u ~ U[0, 1)^D, giving one
  Monte-Carlo sample of the variational bound E_u[-log p(x + u)] + D log 255 >= -log P(k).
"""

import functools
from typing import Callable, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from inflow_jax.utils.checks import check_attention, check_images

PAPER_PRIOR_VARIANCE = float(
  np.sqrt(2.0) * special.erfinv(0.95)
)  # 1.95996...: the original's `dist`
CONVENTIONS = ("paper", "nll")

ScoreFn = Callable[..., jax.Array]


def gaussian_log_prob(z: jax.Array, variance: float) -> jax.Array:
  """log N(z; 0, variance I) summed over all non-batch dimensions: (B,)."""
  squared = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=1)
  return log_prob_from_sq_norm(squared, int(np.prod(z.shape[1:])), variance)


def log_prob_from_sq_norm(sq_norm, dims: int, variance: float):
  """log N(z; 0, variance I) of a D-dimensional z from |z|^2 (any array library)."""
  return -0.5 * sq_norm / variance - 0.5 * dims * np.log(2.0 * np.pi * variance)


def scores_from_terms(sq_norm, log_det, dims: int, convention: str):
  """The score of the module docstring from |z|^2 and the exact log_det of D-dimensional images."""
  if convention == "paper":
    return log_prob_from_sq_norm(sq_norm, dims, PAPER_PRIOR_VARIANCE) - log_det
  return (-log_prob_from_sq_norm(sq_norm, dims, 1.0) - log_det + dims * np.log(255.0)) / (
    dims * np.log(2.0)
  )


def dequantize(x: jax.Array, key: jax.Array) -> jax.Array:
  """Uniform dequantization of 8-bit images x = k/255: x + (u - 1/2)/255, u ~ U[0, 1)^D."""
  return x + (jax.random.uniform(key, x.shape, x.dtype) - 0.5) / 255.0


def bits_per_dim(z: jax.Array, log_det: jax.Array) -> jax.Array:
  """(B,) NLL of the 8-bit images in bits/dim:
  (-log N(z; 0, I) - log_det + D log 255) / (D log 2)."""
  squared = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=1)
  return scores_from_terms(squared, log_det, int(np.prod(z.shape[1:])), "nll")


@functools.partial(jax.jit, static_argnames=("model", "conventions"))
def _flow_scores(
  model, conventions: Tuple[str, ...], variables, x, attention, key
) -> Dict[str, jax.Array]:
  """{convention: (B,) scores} from one pass of `model` (which must return the exact log-det).

  Module-level and keyed on the (hashable) model, so every score function of the same model and
  shapes shares one compilation."""
  if key is not None:
    x = dequantize(x, key)
  z, log_det = model.apply(variables, x, attention)
  squared = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=1)
  return {c: scores_from_terms(squared, log_det, int(np.prod(z.shape[1:])), c) for c in conventions}


def exact_log_det(model):
  """`model` with the exact log-det: `paper_compat=False` (the original's is not multiplied by
  a)."""
  return model.clone(paper_compat=False) if getattr(model, "paper_compat", False) else model


def flow_scores(
  model, variables, x, attention=1.0, conventions: Sequence[str] = CONVENTIONS, key=None
):
  """{convention: (B,) scores} at attention (scalar or (B,)) without input checks: for callers that
  validated a whole set once (x float32 NHWC in [0, 1]); key: 'nll' dequantization noise."""
  attention = jnp.broadcast_to(jnp.asarray(attention, jnp.float32), (x.shape[0],))
  return _flow_scores(
    exact_log_det(model), tuple(conventions), variables, jnp.asarray(x, jnp.float32), attention, key
  )


def make_sharded_score_fn(model, variables, convention: str, mesh: jax.sharding.Mesh) -> ScoreFn:
  """`score_fn(x, attention) -> (B,)` numpy, data-parallel: the batch is split along `mesh`'s `data`
  axis (padded with copies of its last image to a multiple of the device count, the padding dropped
  from the result), the variables replicated. Each image's score is computed on one device exactly
  as on a single device. Unchecked: x float32 NHWC in [0, 1], attention scalar or (B,)."""
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  variables = jax.device_put(
    variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )
  exact_model = exact_log_det(model)

  def score_fn(x, attention=1.0) -> np.ndarray:
    n = x.shape[0]
    padded = -(-n // mesh.size) * mesh.size
    a = np.broadcast_to(np.asarray(attention, np.float32), (n,))
    x = np.concatenate([x, np.repeat(x[-1:], padded - n, axis=0)]) if padded > n else x
    a = np.concatenate([a, np.ones(padded - n, np.float32)])
    out = _flow_scores(
      exact_model,
      (convention,),
      variables,
      jax.device_put(np.asarray(x, np.float32), sharded),
      jax.device_put(a, sharded),
      None,
    )[convention]
    return np.asarray(out)[:n]

  return score_fn


def make_scores_fn(model, variables, conventions: Sequence[str] = CONVENTIONS) -> ScoreFn:
  """Like `make_score_fn`, but returns {convention: (B,) scores} for several conventions from ONE
  pass of the flow: `scores_fn(x, attention=1.0, key=None) -> dict` (key: 'nll' dequantization)."""
  conventions = tuple(conventions)
  if not conventions or any(c not in CONVENTIONS for c in conventions):
    raise ValueError(
      f"conventions must be a non-empty subset of {CONVENTIONS}, got {conventions!r}"
    )
  exact_model = exact_log_det(model)

  def scores_fn(x, attention=1.0, key=None) -> Dict[str, jax.Array]:
    check_images(x, name="x", value_range=(0.0, 1.0))
    attention = jnp.broadcast_to(
      jnp.asarray(check_attention(attention, x.shape[0]), jnp.float32), (x.shape[0],)
    )
    if key is not None and "nll" not in conventions:
      raise ValueError("key (dequantization noise) applies to convention='nll' only")
    return _flow_scores(
      exact_model, conventions, variables, jnp.asarray(x, jnp.float32), attention, key
    )

  scores_fn.conventions = conventions
  return scores_fn


def make_score_fn(model, variables, convention: str = "paper") -> ScoreFn:
  """`score_fn(x, attention, key=None) -> (B,)`, jitted, higher = more OOD
  (see the module docstring).

  Args:
    model: an `inflow_jax.model.InFlow` (either `paper_compat` value: the exact log-det is used).
    variables: its variables.
    convention: 'paper' (the original's score) or 'nll' (bits/dim; `key` dequantizes).
  Returns:
    score_fn(x (B, H, W, C) float32 in [0, 1], attention scalar or (B,) in [0, 1], key=None). Inputs
    are validated (shapes always; values when concrete), so it can be traced and differentiated.
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
  scores_fn = make_scores_fn(model, variables)  # both: one compilation shared with make_scores_fn

  def score_fn(x, attention=1.0, key=None) -> jax.Array:
    if key is not None and convention != "nll":
      raise ValueError("key (dequantization noise) applies to convention='nll' only")
    return scores_fn(x, attention, key)[convention]

  score_fn.convention = convention
  return score_fn
