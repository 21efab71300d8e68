"""Input pipelines: whole splits as uint8 arrays, preprocessing to the model's input, batches.

Dataset names (`name` argument of `load_split` / `load_images`):
  `digits`, `digits_inverted`, `photo_patches`, `uniform_noise`, `gaussian_noise`, `constant`:
      the embedded offline sets (`inflow_jax.data.offline`), splits `train` / `test`; nothing is downloaded.
  `npz:PATH`: a NumPy `.npz` file: keys `x_<split>` (and `y_<split>`) when present, else `x` (and `y`),
      else its single array. Images uint8 NHWC (C = 1 or 3), or floats in [0, 1] (mapped to
      `round(255 x)`); labels integers.
  `npy:PATH`: a `.npy` file holding one such image array (no labels).
  `folder:PATH`: PNG/JPEG files, all of one size. When `PATH/<split>` is a directory it is read
      instead of PATH. Image files directly in the folder: no labels; else one subfolder per class:
      labels = index of the subfolder in sorted order.
  `tfds:NAME` or a bare `NAME`: a tensorflow-datasets dataset (`cifar10`, `cifar100`, `svhn_cropped`,
      `mnist`, `fashion_mnist`, `celeb_a`, `NAME/CONFIG:VERSION`, or any dataset prepared in `data_dir`),
      read with `tfds.builder(NAME, data_dir=data_dir)`. Nothing is downloaded unless `download=True`.
      Datasets stored as array_record are read with `as_data_source` (no TensorFlow needed); the tfds
      default, tfrecord, is read with `as_dataset` and needs TensorFlow (the `tfds-build` extra).

Splits: for tfds, any tfds split string (`test`, `train[:10%]`, `train+test`). For the other sources,
`SPLIT` or `SPLIT[start:stop]` (integers or percentages, e.g. `test[:1000]`, `train[-10%:]`). A file
(or a folder without a `SPLIT` subfolder) holds one set and serves it under every split name.

Preprocessing (`preprocess`), as the original InFlow evaluation: optional centre crop (`celeb_a`,
whose images are 218x178, is cropped to 140x140 first: `default_center_crop`), then PIL bilinear
resize of the uint8 image to `image_size` (skipped when already that size), then `/ 255`;
grayscale is repeated to 3 channels.
"""

import math
import re
from typing import Iterator, Optional, Tuple, Union

import jax
import numpy as np

from inflow_jax.data import files as image_files
from inflow_jax.data import offline as offline_data
from inflow_jax.data import tfds as tfds_source
from inflow_jax.data.files import check_uint8_images
from inflow_jax.utils.checks import check_images

Labels = Optional[np.ndarray]
FILE_PREFIXES = ("npz", "npy", "folder")
CELEB_A_CROP = 140
_SPLIT_RE = re.compile(r"^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


def known_names() -> str:
  """A one-line summary of the names `load_split` accepts (used in error messages)."""
  return (
    f"offline sets: {', '.join(offline_data.OFFLINE_SETS)}; files: npz:PATH, npy:PATH, "
    f"folder:PATH; tfds (tfds:NAME or NAME): {', '.join(tfds_source.STANDARD_DATASETS)} "
    "or any tfds dataset prepared in data_dir"
  )


def parse_name(name: str) -> Tuple[str, str]:
  """Splits a dataset name into `(source, argument)`: source in offline/npz/npy/folder/tfds."""
  if not isinstance(name, str) or not name.strip():
    raise ValueError(
      f"dataset name must be a non-empty string, got {name!r}; known: {known_names()}"
    )
  name = name.strip()
  if name in offline_data.OFFLINE_SETS:
    return "offline", name
  prefix, sep, rest = name.partition(":")
  if sep and prefix in FILE_PREFIXES + ("tfds",):
    if not rest:
      raise ValueError(f'dataset name {name!r} lacks the part after "{prefix}:"')
    return prefix, rest
  return "tfds", name


def default_center_crop(name: str) -> Optional[int]:
  """The centre crop a dataset name implies: 140 for tfds `celeb_a` (218x178 faces), else None."""
  source, argument = parse_name(name)
  if source == "tfds" and re.split(r"[/:]", argument)[0] == "celeb_a":
    return CELEB_A_CROP
  return None


def slice_split(images: np.ndarray, labels: Labels, split: str) -> Tuple[np.ndarray, Labels]:
  """Applies the `[start:stop]` part of `SPLIT[start:stop]` (integers or percentages)."""
  match = _SPLIT_RE.match(split.strip())
  n = len(images)

  def bound(text, default):
    if text is None:
      return default
    if text.endswith("%"):
      return int(round(n * int(text[:-1]) / 100))
    return int(text)

  start, stop = bound(match.group(2), 0), bound(match.group(3), n)
  images = images[start:stop]
  labels = None if labels is None else labels[start:stop]
  if not len(images):
    raise ValueError(f"split {split!r} of a set of {n} images is empty")
  return images, labels


def _split_base(split: str) -> str:
  if not isinstance(split, str):
    raise TypeError(f'split must be a string such as "train" or "test[:1000]", got {split!r}')
  match = _SPLIT_RE.match(split.strip())
  if not match:
    raise ValueError(
      f'split {split!r} is not "SPLIT" or "SPLIT[start:stop]" (only tfds datasets accept more)'
    )
  return match.group(1)


def load_split(
  name: str, split: str, data_dir: Optional[str] = None, *, download: bool = False
) -> Tuple[np.ndarray, Labels]:
  """Loads a whole split: uint8 NHWC images in the source's own size and int64 labels (or None).

  Args:
    name: the dataset (syntax in the module docstring).
    split: `train`, `test`, `test[:1000]`, ... (tfds datasets accept every tfds split string).
    data_dir: the tfds data directory (None: tfds's default, `$TFDS_DATA_DIR` or ~/tensorflow_datasets).
    download: let tfds download and prepare a missing dataset (as array_record).
  """
  source, argument = parse_name(name)
  if source == "tfds":
    images, labels = tfds_source.load_tfds(
      argument, split, data_dir, download=download, known_names=known_names()
    )
  else:
    base = _split_base(split)
    if source == "offline":
      images, labels = offline_data.load_offline(argument, base)
    elif source == "folder":
      images, labels = image_files.load_folder(argument, base)
    else:
      images, labels = image_files.load_array_file(argument, base, source)
    images, labels = slice_split(images, labels, split)
  images = check_uint8_images(images, name=f"images of {name!r} {split!r}")
  if labels is not None and len(labels) != len(images):
    raise ValueError(f"{name!r}: {len(labels)} labels for {len(images)} images")
  return images, labels


def preprocess(
  images: np.ndarray, image_size: int = 32, center_crop: Optional[int] = None
) -> np.ndarray:
  """uint8 (N, H, W, C in {1, 3}) -> float32 (N, image_size, image_size, 3) in [0, 1].

  x = resize_bilinear(crop(images)) / 255, the resize by PIL on the uint8 image (skipped when the
  image is already image_size x image_size), the crop a centred `center_crop` square with top-left
  corner (round((H - c) / 2), round((W - c) / 2)) as torchvision's CenterCrop; C = 1 is repeated to 3.
  """
  images = check_uint8_images(images)
  if not isinstance(image_size, (int, np.integer)) or image_size < 1:
    raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
  if center_crop is not None:
    height, width = images.shape[1:3]
    if not 0 < center_crop <= min(height, width):
      raise ValueError(f"center_crop {center_crop} does not fit images of {height}x{width}")
    top, left = int(round((height - center_crop) / 2.0)), int(round((width - center_crop) / 2.0))
    images = images[:, top : top + center_crop, left : left + center_crop]
  if images.shape[1:3] != (image_size, image_size):
    images = image_files.resize_bilinear(images, image_size)
  x = images.astype(np.float32) * np.float32(1.0 / 255.0)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return x


def load_images(
  name: str,
  split: str,
  image_size: int = 32,
  data_dir: Optional[str] = None,
  max_images: Optional[int] = None,
) -> Tuple[np.ndarray, Labels]:
  """`load_split` + `preprocess` (crop from `default_center_crop(name)`) of the first `max_images`."""
  images, labels = load_split(name, split, data_dir)
  if max_images is not None:
    if max_images < 1:
      raise ValueError(f"max_images must be >= 1, got {max_images}")
    images = images[:max_images]
    labels = None if labels is None else labels[:max_images]
  return preprocess(images, image_size, default_center_crop(name)), labels


def process_shard(indices: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """The process's part of `indices`: `np.array_split` into process_count contiguous near-equal
  parts (as `tfds.even_splits` / `tfds.split_for_jax_process`), so the parts are disjoint and cover."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
  return np.array_split(indices, process_count)[process_index]


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

  With `labels` (N,), each batch is `(x, y)` with y the labels of x's images (`(x, y, mask)` with pad).

  Each epoch: order = permutation(N) from `np.random.default_rng([seed, epoch])` (identity when
  shuffle=False), the same on every process; this process takes `process_shard(order)` and cuts it
  into batches. So within an epoch the processes' shards are disjoint and together cover all images.

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
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if labels is not None and np.shape(labels) != (len(images),):
    raise ValueError(f"labels must have shape ({len(images)},), got {np.shape(labels)}")
  if pad and drop_remainder:
    raise ValueError("pad=True pads the last partial batch: pass drop_remainder=False with it")
  if np.asarray(images).dtype == np.uint8:
    images = check_uint8_images(images)
    if image_size is None and images.shape[1] != images.shape[2]:
      raise ValueError(f"images of shape {images.shape} are not square: pass image_size")
    size = image_size or images.shape[1]
    convert = lambda batch: preprocess(batch, size)
  else:
    images = np.asarray(check_images(images, name="images", channels=3, value_range=(0, 1)))
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
      raise ValueError(
        f"float images of shape {images.shape} are not {image_size}x{image_size}; "
        "preprocess the uint8 images to that size first"
      )
    convert = lambda batch: batch.astype(np.float32, copy=False)
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  n = len(images)
  per_process = n // process_count if drop_remainder else math.ceil(n / process_count)
  if per_process < (batch_size if drop_remainder else 1):
    raise ValueError(
      f"{n} images over {process_count} process(es) give {per_process} per process, "
      f"fewer than one batch of {batch_size}"
    )
  num_batches = per_process // batch_size if drop_remainder else math.ceil(per_process / batch_size)

  epoch = 0
  while True:
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if drop_remainder:
      order = order[: per_process * process_count]
    shard = process_shard(order, process_index, process_count)
    for b in range(num_batches):
      indices = shard[b * batch_size : (b + 1) * batch_size]
      x = convert(images[indices])
      y = () if labels is None else (np.asarray(labels)[indices],)
      if not pad:
        yield (x, *y) if y else x
        continue
      mask = np.zeros(batch_size, bool)
      mask[: len(indices)] = True
      if len(indices) < batch_size:
        x = np.concatenate([x, np.zeros((batch_size - len(x),) + x.shape[1:], x.dtype)])
        y = tuple(np.concatenate([a, np.zeros(batch_size - len(a), a.dtype)]) for a in y)
      yield (x, *y, mask)
    epoch += 1
    if not repeat:
      return
