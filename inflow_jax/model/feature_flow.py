"""InFlow on feature vectors: attention-gated dense couplings, each followed by a fixed permutation.

For x of shape (B, D) (e.g. a trained encoder's features), K = num_blocks and attention a:

    z = perm_{K-1}(coupling_{K-1}(norm_{K-1}( ... perm_0(coupling_0(norm_0(x))) ... ))),
    log|det dz/dx| = sum_k a * sum(s_k)  [+ a * sum(log_scale_k) with actnorm=True]   (B,)

* coupling_k: `DenseAttentionCoupling` (`inflow_jax.flows.dense_coupling`), y2 = exp(a s1) x2 + a t1
  and, with two_sided=True (the default here), first y1 = exp(a s2) x1 + a t2 as the image coupling.
  Two-sided because a one-sided coupling leaves x1 alone, and with random permutations some
  dimensions are never moved by any block: 2 of 8 dimensions for K = 4, 34 of 512 for K = 4,
  6 of 512 for K = 6 (seeds 0..K-1); those dimensions' joint law then cannot be fitted.
* perm_k: `Permutation(seed=permutation_seed + k)`, fixed and NOT gated, as in `InFlow`.
* norm_k (actnorm=True): the image flow's `ActNorm` on x viewed as (B, 1, 1, D), i.e. a
  per-dimension y = x exp(a log_scale) + a bias, initialised from the batch given to
  `model.init(key, x, a)` (give it a representative batch: zero-variance data gives log_scale 13.8).

At a = 0 the flow is the permutation perm_{K-1} o ... o perm_0 with log_det 0. The density:

    nll(x, a) = -log N(z; 0, I) - log_det = 0.5 |z|^2 + 0.5 D log(2 pi) - log_det   (nats/vector)

Why: the density of a frozen encoder's features, gated per sample like InFlow's image flow.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from inflow_jax.flows import ActNorm, DenseAttentionCoupling, Permutation
from inflow_jax.model.density import gaussian_log_prob
from inflow_jax.utils.checks import check_attention, is_concrete


def check_features(x, *, name: str = "x", dims: Optional[int] = None):
  """Checks a batch of float feature vectors (B, D), B >= 1, D >= 2 (and D == dims if given),
  finite when concrete; returns it (a big-endian numpy array in native byte order)."""
  shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
  if shape is None or dtype is None:
    raise TypeError(f"{name} must be an array of shape (B, D), got {type(x).__name__}")
  if len(shape) != 2:
    raise ValueError(f"{name} must have rank 2 (B, D) feature vectors, got shape {tuple(shape)}")
  if not np.issubdtype(np.dtype(dtype), np.floating):
    raise TypeError(f"{name} must be floating point, got dtype {np.dtype(dtype)}")
  if shape[0] < 1 or shape[1] < 2:
    raise ValueError(f"{name} must hold B >= 1 vectors of D >= 2 dimensions, got shape {shape}")
  if dims is not None and shape[1] != dims:
    raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(shape)}")
  if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
    raise ValueError(f"{name} contains NaN or infinite values")
  if isinstance(x, np.ndarray) and not x.dtype.isnative:
    return x.astype(x.dtype.newbyteorder("="))
  return x


class FeatureFlow(nn.Module):
  """`z, log_det = model.apply(variables, x, attention)`;
  `x = model.apply(variables, z, attention, method=FeatureFlow.inverse)`.

  Parameters: `coupling_{k}/subnet_{1,2}/{hidden_i, output}/{kernel, bias}` (`subnet_2` only when
  two_sided), plus `norm_{k}/{log_scale, bias}` with actnorm=True. The other fields are
  `DenseAttentionCoupling`'s (width, depth, clamp, activation, zero_init, condition, two_sided),
  shared by every block.
  """

  num_blocks: int = 4
  width: int = 64
  depth: int = 2
  clamp: float = 2.0
  activation: str = "relu"
  permutation_seed: int = 0
  actnorm: bool = False
  zero_init: bool = True
  condition: bool = True
  two_sided: bool = True

  def setup(self):
    if self.num_blocks < 1 or self.depth < 1:
      raise ValueError(f"num_blocks and depth must be >= 1, got {self.num_blocks}, {self.depth}")
    self.coupling = [
      DenseAttentionCoupling(
        self.width,
        self.depth,
        self.clamp,
        self.activation,
        self.zero_init,
        self.condition,
        self.two_sided,
      )
      for _ in range(self.num_blocks)
    ]
    self.permutation = [Permutation(seed=self.permutation_seed + k) for k in range(self.num_blocks)]
    if self.actnorm:
      self.norm = [ActNorm() for _ in range(self.num_blocks)]

  def _dims(self) -> Optional[int]:
    """The D the parameters were built for (None before init): d1 (+ a) in, 2 d2 out."""
    if self.is_initializing() or "params" not in self.variables:
      return None
    net = self.variables["params"]["coupling_0"]["subnet_1"]
    d1 = net["hidden_0"]["kernel"].shape[0] - int(self.condition)
    return d1 + net["output"]["kernel"].shape[1] // 2

  def _check(self, x, attention, name):
    x = check_features(x, name=name, dims=self._dims())
    check_attention(attention, x.shape[0])
    return x

  def _layers(self):
    """The layers in forward order."""
    layers = []
    for k in range(self.num_blocks):
      layers += [self.norm[k]] if self.actnorm else []
      layers += [self.coupling[k], self.permutation[k]]
    return layers

  @staticmethod
  def _step(layer, h, attention, reverse: bool):
    """One layer on (B, D) vectors; ActNorm sees them as (B, 1, 1, D) (one pixel, D channels)."""
    fn = layer.inverse if reverse else layer
    if isinstance(layer, ActNorm):
      out, log_det = fn(h[:, None, None, :], attention)
      return out[:, 0, 0, :], log_det
    return fn(h, attention)

  def __call__(self, x: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """x (B, D) float -> (z (B, D), log|det dz/dx| (B,)); attention: scalar or (B,) in [0, 1]."""
    h = self._check(x, attention, "x")
    log_det = jnp.zeros(h.shape[:1], h.dtype)
    for layer in self._layers():
      h, layer_log_det = self._step(layer, h, attention, reverse=False)
      log_det = log_det + layer_log_det
    return h, log_det

  def inverse(self, z: jnp.ndarray, attention) -> jnp.ndarray:
    """z (B, D) -> x with model(x, attention)[0] == z."""
    return self.inverse_and_log_det(z, attention)[0]

  def inverse_and_log_det(self, z: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """z (B, D) -> (x, log|det dx/dz|) = (x, -log_det of the forward pass at x)."""
    h = self._check(z, attention, "z")
    log_det = jnp.zeros(h.shape[:1], h.dtype)
    for layer in reversed(self._layers()):
      h, layer_log_det = self._step(layer, h, attention, reverse=True)
      log_det = log_det + layer_log_det
    return h, log_det


def nll(model, variables, features, attention=1.0, per_dimension: bool = False) -> jnp.ndarray:
  """(B,) negative log-likelihood of features (B, D) under `model` (a FeatureFlow) at attention:
  -log N(z; 0, I) - log|det dz/dx| in nats per vector, or per dimension (divided by D).

  Pure (jittable with model and per_dimension static); inputs are validated by model.apply."""
  z, log_det = model.apply(variables, features, attention)
  value = -gaussian_log_prob(z, 1.0) - log_det
  return value / z.shape[-1] if per_dimension else value
