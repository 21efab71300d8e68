"""Per-image OOD scores of an InFlow model; higher always means more OOD.

With `z, L = f_a(x)` the flow at attention a and `L = log|det dz/dx|` its **exact** log-determinant
(`a * sum(s)` for the paper's coupling blocks; computed with the model's `paper_compat=False` form,
whatever the given model's flag), and D = H*W*C:

* `convention='paper'`, the original InFlow score:
      score(x, a) = log N(z; 0, v I) - L,   v = sqrt(2) erfinv(0.95) ~ 1.96 (a *variance*, as the original)
  At a = 1 this is the original's `prior_ll - log_jac_det`; at a = 0 (flow = fixed permutation, L = 0)
  it is `prior_ll`: exactly the original's two cases (the original code returns the unmultiplied
  `sum(s)` as its log-det, which equals L at a = 1 and is never used at a = 0). A fractional or
  per-sample a is scored by the same formula with the exact L of the gated flow at that a.
  Note the sign: unlike a likelihood, this subtracts the log-det. It is what the paper evaluated.
* `convention='nll'`, the negative log-likelihood of the 8-bit image in **bits per dimension**:
  pixels are x = k/255 with k in {0..255}; pixel k stands for the bin [(k - 1/2)/255, (k + 1/2)/255] of
  width 1/255, so `P(k) ~= p(x) 255^-D` and
      nll(x, a) = (-log N(z; 0, I) - L + D log 255) / (D log 2).
  With a `key`, x is uniformly dequantized first, x + (u - 1/2)/255 with u ~ U[0, 1)^D, giving one
  Monte-Carlo sample of the variational bound E_u[-log p(x + u)] + D log 255 >= -log P(k).
"""
import dataclasses
import functools
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from inflow_jax.attention.batches import attention_tests
from inflow_jax.batching import batch_starts
from inflow_jax.checks import check_attention, check_images

PAPER_PRIOR_VARIANCE = float(np.sqrt(2.0) * special.erfinv(0.95))  # 1.95996...: the original's `dist`
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
  return (-log_prob_from_sq_norm(sq_norm, dims, 1.0) - log_det + dims * np.log(255.0)) / (dims * np.log(2.0))


def dequantize(x: jax.Array, key: jax.Array) -> jax.Array:
  """Uniform dequantization of 8-bit images x = k/255: x + (u - 1/2)/255, u ~ U[0, 1)^D."""
  return x + (jax.random.uniform(key, x.shape, x.dtype) - 0.5) / 255.0


def bits_per_dim(z: jax.Array, log_det: jax.Array) -> jax.Array:
  """(B,) NLL of the 8-bit images in bits/dim: (-log N(z; 0, I) - log_det + D log 255) / (D log 2)."""
  squared = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=1)
  return scores_from_terms(squared, log_det, int(np.prod(z.shape[1:])), "nll")


@functools.partial(jax.jit, static_argnames=("model", "conventions"))
def _flow_scores(model, conventions: Tuple[str, ...], variables, x, attention, key) -> Dict[str, jax.Array]:
  """{convention: (B,) scores} from one pass of `model` (which must return the exact log-det).

  Module-level and keyed on the (hashable) model, so every score function of the same model and
  shapes shares one compilation."""
  if key is not None:
    x = dequantize(x, key)
  z, log_det = model.apply(variables, x, attention)
  squared = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=1)
  return {c: scores_from_terms(squared, log_det, int(np.prod(z.shape[1:])), c) for c in conventions}


def exact_log_det(model):
  """`model` with the exact log-det: `paper_compat=False` (the original's is not multiplied by a)."""
  return model.clone(paper_compat=False) if getattr(model, "paper_compat", False) else model


def flow_scores(model, variables, x, attention=1.0, conventions: Sequence[str] = CONVENTIONS,
                key=None):
  """{convention: (B,) scores} at attention (scalar or (B,)) without input checks: for callers that
  validated a whole set once (x float32 NHWC in [0, 1]); key: 'nll' dequantization noise."""
  attention = jnp.broadcast_to(jnp.asarray(attention, jnp.float32), (x.shape[0],))
  return _flow_scores(exact_log_det(model), tuple(conventions), variables, jnp.asarray(x, jnp.float32),
                      attention, key)


def make_sharded_score_fn(model, variables, convention: str, mesh: jax.sharding.Mesh) -> ScoreFn:
  """`score_fn(x, attention) -> (B,)` numpy, data-parallel: the batch is split along `mesh`'s `data`
  axis (padded with copies of its last image to a multiple of the device count, the padding dropped
  from the result), the variables replicated. Each image's score is computed on one device exactly as
  on a single device. Unchecked: x float32 NHWC in [0, 1], attention scalar or (B,)."""
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  variables = jax.device_put(variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  exact_model = exact_log_det(model)

  def score_fn(x, attention=1.0) -> np.ndarray:
    n = x.shape[0]
    padded = -(-n // mesh.size) * mesh.size
    a = np.broadcast_to(np.asarray(attention, np.float32), (n,))
    x = np.concatenate([x, np.repeat(x[-1:], padded - n, axis=0)]) if padded > n else x
    a = np.concatenate([a, np.ones(padded - n, np.float32)])
    out = _flow_scores(exact_model, (convention,), variables, jax.device_put(np.asarray(x, np.float32),
                                                                            sharded),
                       jax.device_put(a, sharded), None)[convention]
    return np.asarray(out)[:n]

  return score_fn


def make_scores_fn(model, variables, conventions: Sequence[str] = CONVENTIONS) -> ScoreFn:
  """Like `make_score_fn`, but returns {convention: (B,) scores} for several conventions from ONE
  pass of the flow: `scores_fn(x, attention=1.0, key=None) -> dict` (key: 'nll' dequantization)."""
  conventions = tuple(conventions)
  if not conventions or any(c not in CONVENTIONS for c in conventions):
    raise ValueError(f"conventions must be a non-empty subset of {CONVENTIONS}, got {conventions!r}")
  exact_model = exact_log_det(model)

  def scores_fn(x, attention=1.0, key=None) -> Dict[str, jax.Array]:
    check_images(x, name="x", value_range=(0.0, 1.0))
    attention = jnp.broadcast_to(
        jnp.asarray(check_attention(attention, x.shape[0]), jnp.float32), (x.shape[0],))
    if key is not None and "nll" not in conventions:
      raise ValueError("key (dequantization noise) applies to convention='nll' only")
    return _flow_scores(exact_model, conventions, variables, jnp.asarray(x, jnp.float32), attention, key)

  scores_fn.conventions = conventions
  return scores_fn


def make_score_fn(model, variables, convention: str = "paper") -> ScoreFn:
  """`score_fn(x, attention, key=None) -> (B,)`, jitted, higher = more OOD (see the module docstring).

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
  scores_fn = make_scores_fn(model, variables)   # both: one compilation shared with make_scores_fn

  def score_fn(x, attention=1.0, key=None) -> jax.Array:
    if key is not None and convention != "nll":
      raise ValueError("key (dequantization noise) applies to convention='nll' only")
    return scores_fn(x, attention, key)[convention]

  score_fn.convention = convention
  return score_fn


@dataclasses.dataclass(frozen=True)
class BatchScores:
  """What `score_batches` returns (numpy arrays).

  scores: (N,) per-image scores; attention: (N,) the a each image was scored with;
  p_values: (n_batches,) the attention test's p-value per tested batch (NaN when not tested);
  flagged: (n_batches,) True where the test flagged the batch (p < level); batch_index: (N,) the batch of
  each image; batch_starts: (n_batches + 1,) image offsets of the batches; image_p_values: (N,)
  per-image conformal p-values (the detector's conformal kinds; else None).
  """
  scores: np.ndarray
  attention: np.ndarray
  p_values: np.ndarray
  flagged: np.ndarray
  batch_index: np.ndarray
  batch_starts: np.ndarray
  image_p_values: Optional[np.ndarray] = None

  @property
  def n_batches(self) -> int:
    return int(self.p_values.size)


def score_batches(score_fn: ScoreFn, mmd_state, x, batch_size: int, key: Optional[jax.Array] = None,
                  attention=None, *, first_batch: int = 0) -> BatchScores:
  """Runs the attention test on each batch of `x` and scores the batch with the resulting a.

  Batch i is `x[starts[i]:starts[i+1]]` (see `inflow_jax.batching.batch_starts`: the last partial batch is scored; a leftover
  single image is tested with the batch before it). Its test uses the key `fold_in(key, i)`, and
  a_i = 1 if p_i >= level else 0 (`inflow_jax.attention.mmd.mmd_test`).

  Args:
    score_fn: from `make_score_fn`.
    mmd_state: from `inflow_jax.attention.mmd.fit_mmd`, or None to skip the test (then `attention` is needed
      and p-values are NaN).
    x: (N, H, W, C) float32 images in [0, 1].
    batch_size: images per tested batch, 2 <= batch_size <= N.
    key: PRNG key of the permutation tests (needed when mmd_state is given).
    attention: None (use the test's a), or an override: a scalar, (n_batches,) one per batch, or (N,)
      one per image. The test still runs (and reports p-values/flags) when mmd_state is given.
    first_batch: when x is a slice of a larger set starting at that set's batch `first_batch`, the
      tests use the keys fold_in(key, first_batch + i), as they would on the whole set.
  """
  if mmd_state is None and attention is None:
    raise ValueError("score_batches needs mmd_state (to test each batch) or an explicit attention")
  shape = {} if mmd_state is None else dict(spatial=mmd_state.image_shape[:2],
                                            channels=mmd_state.image_shape[2])
  check_images(x, name="x", value_range=(0.0, 1.0), **shape)
  if mmd_state is None:
    starts = batch_starts(x.shape[0], batch_size)
    p_values, flagged = np.full(starts.size - 1, np.nan), np.zeros(starts.size - 1, bool)
  else:
    if key is None:
      raise ValueError("the attention test needs a PRNG key for its permutations")
    tests = attention_tests(mmd_state, x, batch_size, key, first_batch=first_batch)
    starts, p_values, flagged = tests.starts, tests.p_values, tests.flagged
  n, n_batches = x.shape[0], starts.size - 1
  batch_index = np.repeat(np.arange(n_batches), np.diff(starts))
  per_image = np.where(flagged, 0.0, 1.0).astype(np.float32)[batch_index]
  if attention is not None:
    override = np.asarray(attention, np.float32)
    if override.ndim == 0:
      per_image = np.full(n, override, np.float32)
    elif override.shape == (n_batches,):
      per_image = override[batch_index]
    elif override.shape == (n,):
      per_image = override.copy()
    else:
      raise ValueError(f"attention must be a scalar, ({n_batches},) per batch or ({n},) per image, "
                       f"got shape {override.shape}")
    check_attention(per_image, n)

  scores = np.empty(n, np.float32)
  for i in range(n_batches):
    sl = slice(starts[i], starts[i + 1])
    scores[sl] = np.asarray(score_fn(x[sl], per_image[sl]))
  return BatchScores(scores=scores, attention=per_image, p_values=p_values, flagged=flagged,
                     batch_index=batch_index, batch_starts=starts)
