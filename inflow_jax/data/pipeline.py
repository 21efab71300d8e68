"""Preprocessing to the model's input, and batches of this process's shard.

Preprocessing (`preprocess`), as the original InFlow evaluation: optional centre crop (`celeb_a`,
whose images are 218x178, is cropped to 140x140 first: `default_center_crop`), then PIL bilinear
resize of the uint8 image to `image_size` (skipped when already that size), then `/ 255`;
grayscale is repeated to 3 channels.
"""

import math
from typing import Callable, Iterator, Optional, Tuple, Union

import jax
import numpy as np

from inflow_jax.data import files as image_files
from inflow_jax.data.files import check_uint8_images
from inflow_jax.data.sources import Labels, default_center_crop, load_split
from inflow_jax.utils.checks import check_images


def preprocess(
  images: np.ndarray, image_size: int = 32, center_crop: Optional[int] = None
) -> np.ndarray:
  """uint8 (N, H, W, C in {1, 3}) -> float32 (N, image_size, image_size, 3) in [0, 1].

  x = resize_bilinear(crop(images)) / 255, the resize by PIL on the uint8 image (skipped when the
  image is already image_size x image_size), the crop a centred `center_crop` square with top-left
  corner (round((H - c) / 2), round((W - c) / 2)) as torchvision's CenterCrop; C = 1 is repeated to
  3.
  """
  images = check_uint8_images(images)
  if not _is_integer(image_size) or image_size < 1:
    raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
  if center_crop is not None:
    height, width = images.shape[1:3]
    if not _is_integer(center_crop) or not 0 < center_crop <= min(height, width):
      raise ValueError(
        f"center_crop must be an integer in [1, {min(height, width)}] to fit images of "
        f"{height}x{width}, got {center_crop!r}"
      )
    top, left = int(round((height - center_crop) / 2.0)), int(round((width - center_crop) / 2.0))
    images = images[:, top : top + center_crop, left : left + center_crop]
  if images.shape[1:3] != (image_size, image_size):
    images = image_files.resize_bilinear(images, image_size)
  x = images.astype(np.float32) * np.float32(1.0 / 255.0)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return x


def _is_integer(value) -> bool:
  """A Python or numpy integer, not a bool (True is no image size)."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def load_images(
  name: str,
  split: str,
  image_size: int = 32,
  data_dir: Optional[str] = None,
  max_images: Optional[int] = None,
) -> Tuple[np.ndarray, Labels]:
  """`load_split` + `preprocess` (crop from `default_center_crop(name)`) of the first
  `max_images`."""
  images, labels = load_split(name, split, data_dir)
  if max_images is not None:
    if max_images < 1:
      raise ValueError(f"max_images must be >= 1, got {max_images}")
    images = images[:max_images]
    labels = None if labels is None else labels[:max_images]
  return preprocess(images, image_size, default_center_crop(name)), labels


def process_shard(indices: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """The process's part of `indices`: `np.array_split` into process_count contiguous near-equal
  parts (as `tfds.even_splits` / `tfds.split_for_jax_process`), so the parts are disjoint and
  cover."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
  return np.array_split(indices, process_count)[process_index]


def _check_batching(images, batch_size: int, labels, pad: bool, drop_remainder: bool) -> None:
  """Raises ValueError for arguments of `batches` that cannot batch `images`."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if labels is not None and np.shape(labels) != (len(images),):
    raise ValueError(f"labels must have shape ({len(images)},), got {np.shape(labels)}")
  if pad and drop_remainder:
    raise ValueError("pad=True pads the last partial batch: pass drop_remainder=False with it")


def _converter(
  images: np.ndarray, image_size: Optional[int]
) -> Tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
  """(the checked images, batch -> float32 batch): `preprocess` for uint8 images, else a cast."""
  if np.asarray(images).dtype == np.uint8:
    images = check_uint8_images(images)
    if image_size is None and images.shape[1] != images.shape[2]:
      raise ValueError(f"images of shape {images.shape} are not square: pass image_size")
    size = image_size or images.shape[1]
    return images, lambda batch: preprocess(batch, size)
  images = np.asarray(check_images(images, name="images", channels=3, value_range=(0, 1)))
  if image_size is not None and images.shape[1:3] != (image_size, image_size):
    raise ValueError(
      f"float images of shape {images.shape} are not {image_size}x{image_size}; "
      "preprocess the uint8 images to that size first"
    )
  return images, lambda batch: batch.astype(np.float32, copy=False)


def _batches_per_process(
  n: int, batch_size: int, drop_remainder: bool, process_count: int
) -> Tuple[int, int]:
  """(images, batches) of each process per epoch."""
  per_process = n // process_count if drop_remainder else math.ceil(n / process_count)
  if per_process < (batch_size if drop_remainder else 1):
    raise ValueError(
      f"{n} images over {process_count} process(es) give {per_process} per process, "
      f"fewer than one batch of {batch_size}"
    )
  num_batches = per_process // batch_size if drop_remainder else math.ceil(per_process / batch_size)
  return per_process, num_batches


def _padded(x: np.ndarray, y: tuple, n_real: int, batch_size: int) -> tuple:
  """(x, *y, mask) zero-padded to batch_size rows; mask marks the n_real real images."""
  mask = np.zeros(batch_size, bool)
  mask[:n_real] = True
  if n_real < batch_size:
    x = np.concatenate([x, np.zeros((batch_size - len(x),) + x.shape[1:], x.dtype)])
    y = tuple(np.concatenate([a, np.zeros(batch_size - len(a), a.dtype)]) for a in y)
  return (x, *y, mask)


def batches(
  images: np.ndarray,
  batch_size: int,
  *,
  seed: int,
  shuffle: bool = True,
  drop_remainder: bool = True,
  pad: bool = False,
  image_size: Optional[int] = None,
  process_index: Optional[int] = None,
  process_count: Optional[int] = None,
  repeat: bool = False,
  labels: Optional[np.ndarray] = None,
) -> Iterator[Union[np.ndarray, Tuple[np.ndarray, ...]]]:
  """Yields float32 (batch_size, S, S, 3) batches in [0, 1] of this process's shard of `images`.

  With `labels` (N,), each batch is `(x, y)` with y the labels of x's images (`(x, y, mask)` with
  pad). Each epoch: order = permutation(N) from `np.random.default_rng([seed, epoch])` (identity
  when shuffle=False), the same on every process; this process takes `process_shard(order)` and cuts
  it into batches. So within an epoch the processes' shards are disjoint and together cover all
  images. A generator: the arguments are checked at the first `next`.

  Args:
    images: float32 NHWC in [0, 1] with 3 channels (`preprocess`ed: fastest), or uint8 NHWC,
      converted per batch by `preprocess(batch, image_size)` (fast when no resize is needed).
    batch_size: images per batch and process.
    seed: the shuffling seed.
    shuffle: shuffle every epoch.
    drop_remainder: drop the last partial batch; every process then takes N // process_count images
      and yields the same number of batches. False: keep it (smaller) unless `pad`.
    pad: (needs drop_remainder=False) zero-pad the last batches to batch_size and yield
      `(x, mask)`, mask a bool (batch_size,) marking real images; every process yields
      ceil(ceil(N / process_count) / batch_size) batches, so multi-host steps stay in lockstep.
    image_size: the output size S for uint8 input (None: the input's own size).
    process_index, process_count: this process and the number of processes (default: JAX's).
    repeat: loop over epochs forever (reshuffled each epoch).
    labels: (N,) labels of `images`, batched alongside them.
  """
  _check_batching(images, batch_size, labels, pad, drop_remainder)
  images, convert = _converter(images, image_size)
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  n = len(images)
  per_process, num_batches = _batches_per_process(n, batch_size, drop_remainder, process_count)
  epoch = 0
  while True:
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    kept = order[: per_process * process_count] if drop_remainder else order
    shard = process_shard(kept, process_index, process_count)
    for b in range(num_batches):
      indices = shard[b * batch_size : (b + 1) * batch_size]
      x = convert(images[indices])
      y = () if labels is None else (np.asarray(labels)[indices],)
      if not pad:
        yield (x, *y) if y else x
        continue
      yield _padded(x, y, len(indices), batch_size)
    epoch += 1
    if not repeat:
      return
