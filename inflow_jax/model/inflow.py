"""The InFlow model: attention-gated coupling blocks, each followed by a fixed channel permutation.

Paper architecture (num_scales=1, glow=False), as the original code:

    z = perm_{K-1}(block_{K-1}( ... perm_0(block_0(x)) ... )),
    log_det = sum of the blocks' log-dets

with `AttentionCoupling` blocks (see `inflow_jax.flows.coupling` for the equations). x and z are
NHWC of the same shape; log_det is log|det dz/dx| per image:
* exact (paper_compat=False): a * sum over blocks of (sum s1 + sum s2); at a = 0 the flow is the
  fixed channel permutation perm_{K-1} o ... o perm_0 (the permutations are not gated, as in the
  original) with log_det 0.
* paper_compat=True: the original's sum of (sum s1 + sum s2), not multiplied by a.

Beyond the paper:
* glow=True: an `ActNorm` and an `InvertibleConv1x1` before each coupling, both gated by a (at a = 0
  they are the identity with log-det 0; their log-det is always the exact gated one, also with
  paper_compat). ActNorm's data-dependent initialisation happens in `model.init(key, x, attention)`
  from the batch `x` given there.
* num_scales=L > 1: a multi-scale flow. Level l = 0..L-1 squeezes (2x2 space-to-depth), applies
  num_blocks (glow) blocks and, except at the last level, factors out the first half of the
  channels. z re-assembles the factored parts (merge + unsqueeze in reverse order), so z has x's
  shape and the standard-normal prior applies to all of it. H and W must be divisible by 2^L.

zero_init=True: the couplings' subnets end in a zero-initialised conv (Glow's initialisation), so
the initial flow is ActNorm + 1x1 convolutions only; the default keeps PyTorch's (the paper's) init.

Permutations: block k (counted over all levels) uses `permutations[k]` when given, else
`numpy.random.RandomState(permutation_seed + k).permutation(C_level)` (seed 0 = the original's).
"""

from typing import Dict, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from inflow_jax.flows import (
  ActNorm,
  AttentionCoupling,
  InvertibleConv1x1,
  Permutation,
  merge,
  split,
  squeeze,
  unsqueeze,
)
from inflow_jax.utils.checks import check_attention, check_images


class InFlow(nn.Module):
  """`z, log_det = model.apply(variables, x, attention)`;
  `x = model.apply(..., z, a, method=InFlow.inverse)`.

  Parameters: `coupling_{k}/subnet_{s1,t1,s2,t2}/{kernel_0, bias_0, kernel_1, bias_1}` (HWIO
  kernels, torch's `module_list.{2k}.subnet_*.{0,2}.{weight,bias}`), plus `actnorm_{k}` and
  `invconv_{k}` when glow=True.
  """

  num_blocks: int = 2
  width: int = 256
  clamp: float = 2.0
  permutation_seed: int = 0
  glow: bool = False
  num_scales: int = 1
  paper_compat: bool = False
  permutations: Optional[Tuple[Tuple[int, ...], ...]] = None
  condition_channels: int = 3
  zero_init: bool = False

  def setup(self):
    total = self.num_blocks * self.num_scales
    if self.num_blocks < 1 or self.num_scales < 1:
      raise ValueError(
        f"num_blocks and num_scales must be >= 1, got {self.num_blocks}, {self.num_scales}"
      )
    if self.permutations is not None and len(self.permutations) != total:
      raise ValueError(
        f"permutations must hold {total} permutations (one per block), got {len(self.permutations)}"
      )
    self.coupling = [
      AttentionCoupling(
        self.width, self.clamp, self.condition_channels, self.paper_compat, self.zero_init
      )
      for _ in range(total)
    ]
    self.permutation = [
      Permutation(
        seed=self.permutation_seed + k,
        perm=None if self.permutations is None else tuple(self.permutations[k]),
      )
      for k in range(total)
    ]
    if self.glow:
      self.actnorm = [ActNorm() for _ in range(total)]
      self.invconv = [InvertibleConv1x1() for _ in range(total)]

  def _channels(self) -> Optional[int]:
    """The image channel count the parameters were built for (None before init)."""
    if self.is_initializing() or "params" not in self.variables:
      return None
    first = self.variables["params"]["coupling_0"]
    level0 = first["subnet_s2"]["kernel_1"].shape[-1] + first["subnet_s1"]["kernel_1"].shape[-1]
    return level0 // 4 ** (self.num_scales > 1)

  def _check(self, x, attention, name):
    check_images(x, name=name, channels=self._channels())
    check_attention(attention, x.shape[0])
    if self.num_scales > 1:
      factor = 2**self.num_scales
      if x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(
          f"{name} height and width must be divisible by 2^num_scales = {factor} "
          f"for num_scales={self.num_scales}, got shape {tuple(x.shape)}"
        )

  def _level_layers(self, level: int):
    """The layers of one level in forward order."""
    layers = []
    for k in range(level * self.num_blocks, (level + 1) * self.num_blocks):
      if self.glow:
        layers += [self.actnorm[k], self.invconv[k]]
      layers += [self.coupling[k], self.permutation[k]]
    return layers

  def _descend(self, h, level_fn):
    """Levels 0..L-1: squeeze (multi-scale), h = level_fn(level, h), split off half (not the last).
    Returns (the last level's h, the factored-out parts)."""
    factored = []
    for level in range(self.num_scales):
      if self.num_scales > 1:
        h, _ = squeeze(h)
      h = level_fn(level, h)
      if level < self.num_scales - 1:
        part, h = split(h)
        factored.append(part)
    return h, factored

  def _ascend(self, h, factored, level_fn):
    """The reverse of `_descend`: levels L-1..0: merge, h = level_fn(level, h), unsqueeze."""
    for level in reversed(range(self.num_scales)):
      if level < self.num_scales - 1:
        h = merge(factored[level], h)
      h = level_fn(level, h)
      if self.num_scales > 1:
        h, _ = unsqueeze(h)
    return h

  def _forward(self, x, attention):
    """(the last level's h, the factored-out parts, [(B,) log-det of each block]) of x."""
    block_log_dets = []

    def flow_level(level, h):
      layers = self._level_layers(level)
      per_block = len(layers) // self.num_blocks
      for start in range(0, len(layers), per_block):
        block_log_det = 0.0
        for layer in layers[start : start + per_block]:
          h, layer_log_det = layer(h, attention)
          block_log_det = block_log_det + layer_log_det
        block_log_dets.append(block_log_det)
      return h

    h, factored = self._descend(x, flow_level)
    return h, factored, block_log_dets

  def __call__(self, x: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """x (B, H, W, C) float -> (z (B, H, W, C), log|det dz/dx| (B,)); attention: scalar or (B,)."""
    self._check(x, attention, "x")
    h, factored, block_log_dets = self._forward(x, attention)
    return self._ascend(h, factored, lambda level, h: h), sum(block_log_dets)

  def statistics(self, x: jnp.ndarray, attention) -> Dict[str, jnp.ndarray]:
    """Per-image statistics of the forward pass (the inputs of DoSE-style detectors),
    x (B, H, W, C):

    log_det_blocks (B, K): log|det| of block k (its ActNorm, 1x1 convolution, coupling), in
                           forward order over all levels; sum over k = the forward log_det.
    log_prior_scales (B, L): log N(z_l; 0, I) of the part of z that leaves level l (the factored
                           half at l < L-1, the rest at L-1); sum over l = log N(z; 0, I).
    sq_norm_scales (B, L): |z_l|^2 of the same parts; sum = |z|^2.
    """
    self._check(x, attention, "x")
    h, factored, block_log_dets = self._forward(x, attention)
    parts = list(factored) + [h]
    sq_norms = jnp.stack([jnp.sum(jnp.square(p).reshape(p.shape[0], -1), axis=1) for p in parts], 1)
    dims = np.array([int(np.prod(p.shape[1:])) for p in parts])
    return {
      "log_det_blocks": jnp.stack(block_log_dets, axis=1),
      "log_prior_scales": -0.5 * sq_norms - 0.5 * dims * np.log(2.0 * np.pi),
      "sq_norm_scales": sq_norms,
    }

  def inverse(self, z: jnp.ndarray, attention) -> jnp.ndarray:
    """z (B, H, W, C) -> x with model(x, attention)[0] == z."""
    return self.inverse_and_log_det(z, attention)[0]

  def inverse_and_log_det(self, z: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """z -> (x, log|det dx/dz|) = (x, -log_det of the forward pass at x)."""
    self._check(z, attention, "z")
    log_dets = []

    def inverse_level(level, h):
      for layer in reversed(self._level_layers(level)):
        h, layer_log_det = layer.inverse(h, attention)
        log_dets.append(layer_log_det)
      return h

    h, factored = self._descend(z, lambda level, h: h)
    return self._ascend(h, factored, inverse_level), sum(log_dets)
