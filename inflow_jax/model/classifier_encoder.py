"""The in-distribution encoder: a small CNN trained on the in-distribution labels, with a
rotation-prediction head (RotPred, Hendrycks et al. 2019: trained beside the classes with
`encoder.rotation_fraction`, alone without labels).

  stem:   h = GELU(BN(conv3x3(x)))                                     (B, 32, 32, stem_width)
          or (whiten) the frozen whitening stem GELU(P(x) K + b)      (B, 32, 32, 2 n)
  block:  u = GELU(BN(maxpool2(conv3x3(h))));  h = u + GELU(BN(conv3x3(u)))   per entry of widths
          (residual False: h = GELU(BN(conv3x3(u))), airbench's block)
  pool:   f = max over (i, j) of h                                     (B, widths[-1]): `features`
  heads:  class_logits = f @ W_c + b_c (B, num_classes);  rotation_logits = f @ W_r + b_r (B, 4)

Every 3x3 convolution is `PatchConv3x3` (one matrix product per layer: faster than XLA's
convolution on CPUs). The layout follows the fast CIFAR-10 recipes (airbench: conv-pool-BN-GELU
blocks, max pooling to the features) with a residual second convolution. `features` (the
penultimate layer) is what the post-hoc baselines and the feature flow see; with no labels
(num_classes = 0) only the rotation head is trained (`inflow_jax.training.encoder_loss`).
"""

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.model.patch_conv import PatchConv3x3
from inflow_jax.model.whitening import WhiteningStem
from inflow_jax.utils.batching import fixed_size

NUM_ROTATIONS = 4


class TrainedEncoder(NamedTuple):
  """A trained `ClassifierEncoder` and its variables ({"params", "batch_stats"})."""

  model: "ClassifierEncoder"
  variables: Any


class EncoderOutput(NamedTuple):
  class_logits: jnp.ndarray  # (B, num_classes); (B, 0) without labels
  rotation_logits: jnp.ndarray  # (B, 4): which of 0, 90, 180, 270 degrees x was turned by
  features: jnp.ndarray  # (B, widths[-1]) the pooled penultimate features


class NormAct(nn.Module):
  """GELU(BN(x)): batch norm with running averages r <- momentum r + (1 - momentum) batch, and a
  trained scale (gamma) unless `scale` is False (then gamma = 1: only the bias is trained)."""

  momentum: float = 0.9
  scale: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = nn.BatchNorm(
      use_running_average=not train, momentum=self.momentum, epsilon=1e-5, use_scale=self.scale
    )
    return nn.gelu(norm(x))


class ConvBlock(nn.Module):
  """u = GELU(BN(maxpool2(conv3x3(h)))); u + GELU(BN(conv3x3(u))) (without `residual`: the second
  term alone): halves H and W."""

  width: int
  dirac: bool = False
  bn_momentum: float = 0.9
  bn_scale: bool = True
  residual: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = PatchConv3x3(self.width, dirac=self.dirac)(x)
    x = NormAct(self.bn_momentum, self.bn_scale)(nn.max_pool(x, (2, 2), (2, 2)), train)
    y = NormAct(self.bn_momentum, self.bn_scale)(
      PatchConv3x3(self.width, dirac=self.dirac)(x), train
    )
    return x + y if self.residual else y


class ClassifierEncoder(nn.Module):
  """x (B, H, W, 3) float32 in [0, 1] -> EncoderOutput. `train`: batch statistics (and their
  running averages updated: apply with mutable=['batch_stats']) instead of the running ones."""

  num_classes: int = 10
  stem_width: int = 32
  widths: Sequence[int] = (48, 192, 192)
  whiten: bool = False  # the stem: `WhiteningStem` (2 whiten_components channels; no stem_width)
  whiten_components: int = 12
  dirac: bool = False  # the blocks' convolutions start as identities (`dirac_init`)
  zero_init_heads: bool = False  # the heads start at 0 (logits 0, loss log(num_classes))
  bn_momentum: float = 0.9  # batch norm's running averages (`NormAct`)
  bn_scale: bool = True  # False: batch norm without a trained scale (airbench's)
  logit_scale: float = 1.0  # both heads' logits times this (airbench: 1/9)
  residual: bool = True  # False: the blocks without their skip connection (airbench's)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> EncoderOutput:
    if self.whiten:
      h = WhiteningStem(self.whiten_components)(x)
    else:
      h = NormAct(self.bn_momentum, self.bn_scale)(
        PatchConv3x3(self.stem_width)(2.0 * x - 1.0), train
      )
    for width in self.widths:
      h = ConvBlock(width, self.dirac, self.bn_momentum, self.bn_scale, self.residual)(h, train)
    features = jnp.max(h, axis=(1, 2))
    head_init = nn.initializers.zeros if self.zero_init_heads else nn.initializers.lecun_normal()
    class_logits = (
      self.logit_scale
      * nn.Dense(self.num_classes, kernel_init=head_init, name="class_head")(features)
      if self.num_classes
      else jnp.zeros((x.shape[0], 0), features.dtype)
    )
    rotation_logits = self.logit_scale * nn.Dense(
      NUM_ROTATIONS, kernel_init=head_init, name="rotation_head"
    )(features)
    return EncoderOutput(class_logits, rotation_logits, features)


def _shifted(x: jnp.ndarray, shift: int) -> jnp.ndarray:
  """x (B, H, W, C) moved by `shift` pixels down and right (reflected at the edges)."""
  height, width = x.shape[1], x.shape[2]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  return padded[:, 1 - shift : 1 - shift + height, 1 - shift : 1 - shift + width]


def averaged_outputs(
  model: ClassifierEncoder,
  variables,
  x: jnp.ndarray,
  flip_average: bool = True,
  translate_average: bool = False,
) -> EncoderOutput:
  """The test-time averaged outputs of `encode` (module-level and traceable: differentiable in x,
  for the adaptive attacks)."""

  def mirrored(images):
    out = model.apply(variables, images)
    if not flip_average:
      return out
    flipped = model.apply(variables, images[:, :, ::-1])
    return jax.tree.map(lambda a, b: 0.5 * (a + b), out, flipped)

  out = mirrored(x)
  if not translate_average:
    return out
  up, down = (mirrored(_shifted(x, shift)) for shift in (-1, 1))
  return jax.tree.map(lambda a, b, c: 0.5 * a + 0.25 * (b + c), out, up, down)


@functools.lru_cache(maxsize=16)
def _jitted_apply(model: ClassifierEncoder, flip_average: bool, translate_average: bool):
  return jax.jit(
    lambda variables, x: averaged_outputs(model, variables, x, flip_average, translate_average)
  )


def encode(
  model: ClassifierEncoder,
  variables,
  x,
  *,
  batch_size: int = 250,
  flip_average: bool = True,
  translate_average: bool = False,
) -> EncoderOutput:
  """The encoder's outputs for images x (N, H, W, 3) float32 in [0, 1] as numpy arrays, computed
  in zero-padded chunks of exactly `batch_size` images (so an image's outputs do not depend on how
  the caller batched x). Test-time averages (airbench's): flip_average: o(x) = (f(x) + f(mirror
  x)) / 2; translate_average: o(x) / 2 + (o(x shifted by -1) + o(x shifted by +1)) / 4, shifts of
  one pixel along both axes with reflection (six passes)."""
  apply = _jitted_apply(model, flip_average, translate_average)
  x = np.asarray(x, np.float32)
  return EncoderOutput(*fixed_size(lambda xb: tuple(apply(variables, xb)), x, batch_size))
