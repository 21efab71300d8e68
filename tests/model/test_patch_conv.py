"""`PatchConv3x3` (a 3x3 'SAME' convolution as one matrix product) against `jax.lax`'s convolution
with the same kernel."""

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.model.patch_conv import PatchConv3x3, patches3x3


def test_patch_conv_is_the_same_convolution():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 5, 3))
  layer = PatchConv3x3(4, use_bias=True)
  variables = layer.init(jax.random.PRNGKey(1), x)
  variables = jax.tree.map(lambda a: a + 0.1, variables)  # a non-zero bias
  kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
  expected = jax.lax.conv_general_dilated(
    x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  np.testing.assert_allclose(layer.apply(variables, x), expected + bias, rtol=1e-5, atol=1e-5)


def test_patches_zero_pad_the_border():
  x = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
  p = np.asarray(patches3x3(x))[0]
  assert p.shape == (3, 3, 9)
  np.testing.assert_array_equal(p[1, 1], np.arange(1.0, 10.0))  # the centre sees every pixel
  np.testing.assert_array_equal(p[0, 0], [0, 0, 0, 0, 1, 2, 0, 4, 5])


def test_dirac_init_passes_the_first_channels_through():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
  layer = PatchConv3x3(4, dirac=True)
  y = layer.apply(layer.init(jax.random.PRNGKey(1), x), x)
  np.testing.assert_allclose(y[..., :3], x, atol=1e-6)  # identity on the first C filters
  assert float(jnp.abs(y[..., 3]).max()) > 0.1  # the others random
