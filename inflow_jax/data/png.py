"""PNG code length of images in bits per dimension: the complexity measure of Serra et al. 2020
("Input complexity and out-of-distribution detection with likelihood-based generative models").

    L(x) = 8 |png(x)| / (H W C)      (PIL, compress_level 9: lossless)
"""

import io

import numpy as np
from PIL import Image

from inflow_jax.utils.checks import check_images


def to_uint8(x) -> np.ndarray:
  """Float NHWC images in [0, 1] -> uint8 `round(255 x)` (exact for images that came from uint8)."""
  x = check_images(np.asarray(x), name="x", value_range=(0.0, 1.0))
  return np.round(np.asarray(x, dtype=np.float64) * 255.0).astype(np.uint8)


def png_bits_per_dim(x, compress_level: int = 9) -> np.ndarray:
  """(N,) length of each image's PNG file (PIL, `compress_level`) in bits per dimension,
  8 |png| / (HWC).

  Args:
    x: float NHWC images in [0, 1] with 1 or 3 channels; stored as 8-bit grayscale / RGB PNGs.
  """
  images = to_uint8(x)
  channels = images.shape[-1]
  if channels not in (1, 3):
    raise ValueError(f"PNG compression needs 1 or 3 channels, got shape {images.shape}")
  dims = int(np.prod(images.shape[1:]))
  lengths = np.empty(images.shape[0])
  for i, image in enumerate(images):
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if channels == 1 else image).save(
      buffer, format="PNG", compress_level=compress_level
    )
    lengths[i] = 8.0 * buffer.getbuffer().nbytes / dims
  return lengths
