"""The untrained encoder (`inflow_jax.gates.encoder`): import of the original's PyTorch weights
(against the original's embeddings, and against a numpy evaluation of a hand-made state dict),
seeded init, chunking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from helpers import nhwc, shared_file

from inflow_jax.gates.encoder import (
  Embedder,
  StridedConv,
  load_reference_encoder,
  make_encoder,
  params_from_torch,
)


@pytest.mark.shared
def test_reference_encoder_matches_pytorch_embeddings():
  encoder = load_reference_encoder(shared_file("fixtures/uae_encoder_torch_seed0.npz"))
  data = np.load(shared_file("fixtures/mmd_reference_public.npz"))
  for images, expected in (("x_ref_nchw_uint8", "emb_ref"), ("x_same_nchw_uint8", "emb_same")):
    # 64 images each here; tests/gates/test_mmd.py checks all 1250 through fit_mmd
    emb = np.asarray(encoder(nhwc(data[images][:64])))
    np.testing.assert_allclose(emb, data[expected][:64], atol=1e-4, rtol=0)


def torch_encoder_numpy(state, x_nchw):
  """The original's nn.Sequential(Conv2d(4, stride 2), ReLU, Conv2d, ReLU, Conv2d, ReLU, Flatten,
  Linear) evaluated in float64 numpy from its state dict: each conv a sum of scipy 2-d
  cross-correlations (torch's Conv2d) taken at every second position, the flatten in (c, h, w)
  order."""
  h = np.asarray(x_nchw, np.float64)
  for name in ("0", "2", "4"):
    weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
    out = np.stack(
      [
        np.stack(
          [
            sum(
              scipy.signal.correlate2d(image[c], weight[o, c], mode="valid")
              for c in range(weight.shape[1])
            )[::2, ::2]
            + bias[o]
            for o in range(weight.shape[0])
          ]
        )
        for image in h
      ]
    )
    h = np.maximum(out, 0.0)
  return h.reshape(len(h), -1) @ state["7.weight"].T + state["7.bias"]


def test_import_of_a_hand_made_state_dict_equals_the_torch_layers(tmp_path):
  """A small state dict in the original's naming and layout (OIHW convs, Linear (out, C*H*W)),
  converted by `params_from_torch` (and through an .npz by `load_reference_encoder`): the embedding
  equals the PyTorch layers written out in numpy, with no ../shared file and no torch."""
  rng = np.random.default_rng(0)
  shapes = {"0": (4, 3, 4, 4), "2": (5, 4, 4, 4), "4": (6, 5, 4, 4), "7": (3, 6 * 2 * 2)}
  state = {}
  for name, shape in shapes.items():
    state[f"{name}.weight"] = rng.normal(0.0, 0.5, shape).astype(np.float32)
    state[f"{name}.bias"] = rng.normal(0.0, 0.1, shape[0]).astype(np.float32)
  x = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
  expected = torch_encoder_numpy(state, x.transpose(0, 3, 1, 2))
  params, features, embedding_dim = params_from_torch(state)
  assert (features, embedding_dim) == ((4, 5, 6), 3)
  encoder = Embedder(params=params, features=features, embedding_dim=embedding_dim)
  np.testing.assert_allclose(encoder(x), expected, rtol=1e-4, atol=1e-5)
  assert np.abs(expected).max() > 0.1  # the embedding is not trivially near zero
  np.savez(tmp_path / "encoder.npz", **state)
  loaded = load_reference_encoder(tmp_path / "encoder.npz")
  np.testing.assert_allclose(loaded(x), expected, rtol=1e-4, atol=1e-5)


def test_import_rejects_wrong_state_dict():
  with pytest.raises(KeyError, match="7.weight"):
    params_from_torch({"0.weight": np.zeros((64, 3, 4, 4)), "0.bias": np.zeros(64)})
  state = {f"{i}.{p}": np.zeros(1) for i in (0, 2, 4, 7) for p in ("weight", "bias")}
  state["0.weight"] = np.zeros((64, 1, 4, 4))
  with pytest.raises(ValueError, match="0.weight"):
    params_from_torch(state)


def test_seeded_init_is_reproducible_and_pytorch_like():
  a, b, c = make_encoder(seed=0), make_encoder(seed=0), make_encoder(seed=1)
  x = np.random.default_rng(0).uniform(size=(5, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(a(x), b(x))
  assert not np.allclose(a(x), c(x))
  assert a(x).shape == (5, 32)
  for name, fan_in in (("conv0", 48), ("conv1", 1024), ("conv2", 2048), ("dense", 2048)):
    for leaf in a.params[name].values():
      bound = 1.0 / np.sqrt(fan_in)
      assert np.abs(leaf).max() <= bound
      assert np.abs(leaf).max() > 0.9 * bound  # uniform over the whole interval, not narrower


@pytest.mark.parametrize(
  "kernel_size,stride,size", [(4, 2, 32), (4, 2, 15), (4, 2, 6), (6, 2, 13), (3, 1, 7), (6, 3, 14)]
)
def test_strided_conv_equals_lax_conv(kernel_size, stride, size):
  """The space-to-depth matrix product against XLA's own VALID strided convolution, in float64."""
  rng = np.random.default_rng(kernel_size * 100 + size)
  x = rng.normal(size=(3, size, size + 1, 5))
  conv = StridedConv(7, kernel_size, stride)
  with jax.enable_x64():
    params = {
      "kernel": rng.normal(size=(kernel_size, kernel_size, 5, 7)),
      "bias": rng.normal(size=7),
    }
    y = conv.apply({"params": params}, x)
    expected = (
      jax.lax.conv_general_dilated(
        x, params["kernel"], (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
      + params["bias"]
    )
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, atol=1e-12)


def test_chunked_embedding_equals_one_batch():
  encoder = make_encoder(seed=3)
  x = np.random.default_rng(1).uniform(size=(11, 32, 32, 3)).astype(np.float32)
  whole = encoder.replace(chunk_size=11, early_chunk_size=11)
  # padded chunks, nested padded chunks
  for chunk_size, early_chunk_size in ((4, 16), (4, 3), (6, 4)):
    chunked = encoder.replace(chunk_size=chunk_size, early_chunk_size=early_chunk_size)
    np.testing.assert_allclose(chunked(x), whole(x), atol=1e-6)


def test_encoder_equals_plain_strided_convolutions():
  """The embedding (cropped first layer, layers split into chunks) against lax.conv on the full
  image."""
  encoder = make_encoder(seed=5)
  x = np.random.default_rng(2).uniform(size=(5, 32, 32, 3))
  with jax.enable_x64():
    h = jnp.asarray(x)
    for i in range(3):
      layer = encoder.params[f"conv{i}"]
      h = jax.nn.relu(
        jax.lax.conv_general_dilated(
          h,
          jnp.asarray(layer["kernel"], jnp.float64),
          (2, 2),
          "VALID",
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        + jnp.asarray(layer["bias"], jnp.float64)
      )
    expected = (
      h.reshape(5, -1) @ encoder.params["dense"]["kernel"] + encoder.params["dense"]["bias"]
    )
  np.testing.assert_allclose(
    encoder.replace(early_chunk_size=2)(x.astype(np.float32)), expected, atol=1e-5
  )


def test_encoder_rejects_bad_images():
  encoder = make_encoder(seed=0)
  with pytest.raises(ValueError, match="32x32"):
    encoder(np.zeros((2, 28, 28, 3), np.float32))
  with pytest.raises(ValueError, match="NaN"):
    encoder(np.full((2, 32, 32, 3), np.nan, np.float32))
  with pytest.raises(TypeError, match="255"):
    encoder(np.zeros((2, 32, 32, 3), np.uint8))
