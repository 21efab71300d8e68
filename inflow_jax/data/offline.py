"""The embedded offline datasets: built from scikit-learn's bundled data, downloading nothing.

In-distribution:
  `digits`: scikit-learn's handwritten digits (`load_digits`, 1797 images of 8x8 in 0..16), scaled
    to uint8 by `round(v * 255 / 16)`, upsampled to 32x32 with PIL bilinear and repeated to 3
    channels. Split deterministically (a fixed permutation, seed 0): 1400 `train`, 397 `test`;
    labels 0..9.

Out-of-distribution (32x32x3 uint8, `train` and `test` splits of 500 images each, drawn from
independent seeds, so the two splits differ and every call returns the same images):
  `digits_inverted`: `255 - digits` of the same split (near-OOD: same shapes, inverted contrast).
  `photo_patches`: square crops (side uniform in 32..128 px) of scikit-learn's two sample
    photographs (`load_sample_images`: china.jpg, flower.jpg), resized to 32x32 with PIL bilinear.
  `uniform_noise`: every pixel uniform in 0..255.
  `gaussian_noise`: every pixel `round(255 * clip(N(0.5, 0.25^2), 0, 1))`.
  `constant`: each image one colour, uniform in 0..255 per channel.
"""

import zlib
from typing import Optional, Tuple

import numpy as np

from inflow_jax.data.files import resize_bilinear

IMAGE_SIZE = 32
DIGITS_TRAIN_SIZE = 1400
OOD_SET_SIZE = 500
SPLITS = ("train", "test")
IN_DISTRIBUTION = ("digits",)
OUT_OF_DISTRIBUTION = (
  "digits_inverted",
  "photo_patches",
  "uniform_noise",
  "gaussian_noise",
  "constant",
)
OFFLINE_SETS = IN_DISTRIBUTION + OUT_OF_DISTRIBUTION


def _rng(name: str, split: str) -> np.random.Generator:
  """A generator fixed by (set name, split): independent streams for every set and split."""
  return np.random.default_rng([zlib.crc32(name.encode()), SPLITS.index(split)])


def _digits(split: str) -> Tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  order = np.random.default_rng(0).permutation(len(digits.target))
  order = order[:DIGITS_TRAIN_SIZE] if split == "train" else order[DIGITS_TRAIN_SIZE:]
  small = np.round(digits.images[order] * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
  large = resize_bilinear(small[..., None], IMAGE_SIZE)  # (N, 32, 32, 1)
  images = np.repeat(large, 3, axis=-1)
  return images, digits.target[order].astype(np.int64)


def _photo_patches(rng: np.random.Generator, count: int) -> np.ndarray:
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top

  photos = load_sample_images().images  # two (427, 640, 3) uint8 photographs
  patches = []
  for _ in range(count):
    photo = photos[rng.integers(len(photos))]
    side = int(rng.integers(IMAGE_SIZE, 4 * IMAGE_SIZE + 1))
    top = int(rng.integers(photo.shape[0] - side + 1))
    left = int(rng.integers(photo.shape[1] - side + 1))
    patches.append(photo[top : top + side, left : left + side])
  return np.concatenate([resize_bilinear(patch[None], IMAGE_SIZE) for patch in patches])


def load_offline(name: str, split: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Returns `(images, labels)` of an offline set: uint8 (N, 32, 32, 3), int64 (N,) labels or
  None."""
  if name not in OFFLINE_SETS:
    raise ValueError(
      f"unknown offline set {name!r}; the offline sets are {', '.join(OFFLINE_SETS)}"
    )
  if split not in SPLITS:
    raise ValueError(f"the offline set {name!r} has splits {SPLITS}, got split {split!r}")
  if name == "digits":
    return _digits(split)
  if name == "digits_inverted":
    images, labels = _digits(split)
    return 255 - images, labels
  rng = _rng(name, split)
  shape = (OOD_SET_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3)
  if name == "photo_patches":
    images = _photo_patches(rng, OOD_SET_SIZE)
  elif name == "uniform_noise":
    images = rng.integers(0, 256, shape, dtype=np.uint8)
  elif name == "gaussian_noise":
    images = np.round(255 * np.clip(rng.normal(0.5, 0.25, shape), 0, 1)).astype(np.uint8)
  else:  # constant
    colours = rng.integers(0, 256, (OOD_SET_SIZE, 1, 1, 3), dtype=np.uint8)
    images = np.broadcast_to(colours, shape).copy()
  return images, None
