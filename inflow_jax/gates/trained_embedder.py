"""The MMD test's embedding by the trained in-distribution encoder (`attention.encoder="trained"`):
its pooled penultimate features as the semantic view sees them,

  embed(x) = (f(x) + f(mirror x)) / 2      f: `ClassifierEncoder` features, (N, widths[-1])
             (f(x) without `flip_average`)

Why: the paper's untrained encoder embeds pixel statistics; a batch of faces or of TinyImageNet
images differs from CIFAR-10 in what the trained encoder's features encode, so the same permutation
test on them has more power on semantic shifts (measurements: docs/results.md). A drop-in for the
random `Embedder`: a callable pytree (the variables are leaves), usable inside `jax.jit` (the
adaptive attacks differentiate through it).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp

from inflow_jax.model.classifier_encoder import TrainedEncoder, averaged_outputs
from inflow_jax.utils.batching import map_in_chunks
from inflow_jax.utils.checks import check_images


@flax.struct.dataclass
class TrainedEmbedder:
  """`embedder(x)`: x (N, H, W, 3) float in [0, 1] -> (N, widths[-1]) features, in chunks of
  `chunk_size` images under `lax.map` (peak memory one chunk's activations)."""

  variables: Any
  model: Any = flax.struct.field(pytree_node=False)
  flip_average: bool = flax.struct.field(pytree_node=False, default=True)
  chunk_size: int = flax.struct.field(pytree_node=False, default=250)

  @classmethod
  def of(
    cls, trained_encoder: TrainedEncoder, flip_average: bool = True, chunk_size: int = 250
  ) -> "TrainedEmbedder":
    return cls(trained_encoder.variables, trained_encoder.model, flip_average, chunk_size)

  def __call__(self, x) -> jax.Array:
    if not isinstance(x, jax.core.Tracer):
      x = check_images(x, name="x", channels=3, value_range=(0.0, 1.0))
    return _embed(self, jnp.asarray(x, jnp.float32))


@jax.jit
def _embed(embedder: TrainedEmbedder, x: jax.Array) -> jax.Array:
  def features(chunk):
    outputs = averaged_outputs(embedder.model, embedder.variables, chunk, embedder.flip_average)
    return outputs.features

  return map_in_chunks(features, x, embedder.chunk_size)
