"""inflow_jax: InFlow outlier detection (attention-gated normalizing flows) in JAX/Flax.

Public API (each name lives in the module of its concept):
  data: load_split, preprocess, load_images, batches (input pipelines; dataset names documented there)
"""
from inflow_jax.data import batches, load_images, load_split, preprocess
