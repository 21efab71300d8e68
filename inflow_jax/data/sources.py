"""Dataset names and splits, and loading a whole split as uint8 arrays.

Dataset names (`name` argument of `load_split` / `load_images`):
  `digits`, `digits_inverted`, `photo_patches`, `uniform_noise`, `gaussian_noise`, `constant`:
      the embedded offline sets (`inflow_jax.data.offline`), splits `train` / `test`; nothing is
      downloaded.
  `npz:PATH`: a NumPy `.npz` file: keys `x_<split>` (and `y_<split>`) when present, else `x` (and
      `y`), else its single array. Images uint8 NHWC (C = 1 or 3), or floats in [0, 1] (mapped to
      `round(255 x)`); labels integers.
  `npy:PATH`: a `.npy` file holding one such image array (no labels).
  `folder:PATH`: PNG/JPEG files, all of one size. When `PATH/<split>` is a directory it is read
      instead of PATH. Image files directly in the folder: no labels; else one subfolder per class:
      labels = index of the subfolder in sorted order.
  `tfds:NAME` or a bare `NAME`: a tensorflow-datasets dataset (`cifar10`, `cifar100`,
      `svhn_cropped`, `mnist`, `fashion_mnist`, `celeb_a`, `NAME/CONFIG:VERSION`, or any dataset
      prepared in `data_dir`), read with `tfds.builder(NAME, data_dir=data_dir)`. Nothing is
      downloaded unless `download=True`. Datasets stored as array_record are read with
      `as_data_source` (no TensorFlow needed); the tfds default, tfrecord, is read with `as_dataset`
      and needs TensorFlow (the `tfds-build` extra).

Splits: for tfds, any tfds split string (`test`, `train[:10%]`, `train+test`). For the other
sources, `SPLIT` or `SPLIT[start:stop]` (integers or percentages, e.g. `test[:1000]`,
`train[-10%:]`). A file (or a folder without a `SPLIT` subfolder) holds one set and serves it under
every split name.
"""

import re
from typing import Optional, Tuple

import numpy as np

from inflow_jax.data import files as image_files
from inflow_jax.data import offline as offline_data
from inflow_jax.data import tfds as tfds_source
from inflow_jax.data.files import check_uint8_images

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
    data_dir: the tfds data directory (None: tfds's default, `$TFDS_DATA_DIR` or
      ~/tensorflow_datasets).
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
