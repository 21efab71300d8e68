"""inflow_jax: InFlow outlier detection (attention-gated normalizing flows) in JAX/Flax.

Public API (each name lives in the module of its concept):
"""
