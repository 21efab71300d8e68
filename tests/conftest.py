"""pytest setup: eight simulated CPU devices, so that data-parallel code is exercised on any machine.

Shared helpers (the ../shared paths, jit and Jacobian checks) live in tests/helpers.py.
"""

import jax

# Must happen before JAX initialises its backends.
jax.config.update("jax_num_cpu_devices", 8)
