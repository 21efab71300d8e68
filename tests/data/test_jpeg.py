"""The JPEG round trip (`inflow_jax.data.jpeg`): PIL's encoder and decoder."""

import io

import numpy as np
from PIL import Image

from inflow_jax.data.jpeg import jpeg_round_trip


def test_jpeg_round_trip_is_pil():
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
  out = jpeg_round_trip(images / 255.0, 75)
  buffer = io.BytesIO()
  Image.fromarray(images[1]).save(buffer, format="JPEG", quality=75)
  np.testing.assert_array_equal(
    np.round(out[1] * 255).astype(np.uint8), np.asarray(Image.open(buffer))
  )
  gray = jpeg_round_trip(images[..., :1] / 255.0, 50)
  assert out.dtype == np.float32 and gray.shape == (2, 16, 16, 1)
