"""The attacks' objectives (`inflow_jax.adversarial.objectives`): the MMD attack's statistic is the
test's."""

import jax
import numpy as np

from inflow_jax import adversarial, data
from inflow_jax.gates import fit_mmd, mmd_test
from inflow_jax.gates.encoder import make_encoder


def test_batch_mmd2_is_the_tests_statistic():
  x_ref, _ = data.load_images("digits", "train", max_images=120)
  x_noise, _ = data.load_images("uniform_noise", "test", max_images=16)
  state = fit_mmd(x_ref, make_encoder(0), n_permutations=50)
  result = mmd_test(state, x_noise, jax.random.key(0))
  np.testing.assert_allclose(
    jax.jit(adversarial.batch_mmd2)(state, x_noise), result.mmd2, rtol=1e-4, atol=1e-7
  )
