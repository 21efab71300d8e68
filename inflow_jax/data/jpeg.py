"""The JPEG round trip: a preprocessing step that puts every image through one lossy pipeline.

    x' = decode(encode_JPEG(round(255 x), quality)) / 255      (PIL, 4:2:0 chroma subsampling)

Why: a density model trained on JPEG copies (as `../shared/data`'s CIFAR-10) tells JPEG images from
lossless ones by their compression artefacts alone, so lossless in-distribution images look OOD and
lossless OOD sets look easier than they are. A detector whose inputs all go through the same round
trip (`InFlowDetector(..., jpeg_quality=75)`, `data.jpeg_quality`) compares content, not pipelines.
"""

import io
from typing import Optional

import numpy as np
from PIL import Image


def check_jpeg_quality(quality: Optional[int]) -> Optional[int]:
  """None (no round trip) or an int in [1, 95]; raises ValueError otherwise."""
  if quality is None:
    return None
  if (
    isinstance(quality, bool)
    or not isinstance(quality, (int, np.integer))
    or not 1 <= quality <= 95
  ):
    raise ValueError(f"jpeg_quality must be None (off) or an integer in [1, 95], got {quality!r}")
  return int(quality)


def jpeg_round_trip(x: np.ndarray, quality: int) -> np.ndarray:
  """float (N, H, W, C in {1, 3}) in [0, 1] -> float32 of the same shape: each image through JPEG.

  Unchecked (the caller validated x and quality); C = 1 is coded as grayscale JPEG.
  """
  images = np.round(np.asarray(x, np.float64) * 255.0).astype(np.uint8)
  out = np.empty(images.shape, np.float32)
  gray = images.shape[-1] == 1
  for i, image in enumerate(images):
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if gray else image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("L" if gray else "RGB"))
    out[i] = (decoded[..., None] if gray else decoded) * np.float32(1.0 / 255.0)
  return out
