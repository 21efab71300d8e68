"""The user's own images: `.npz` / `.npy` arrays and folders of PNG/JPEG files; PIL resizing.

Every reader returns `(images, labels)`: uint8 NHWC images (C = 1 or 3) in the files' own size and
int64 labels or None. Unreadable files, wrong shapes and empty folders raise errors naming the path.
"""

import pathlib
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W, C in {1, 3}) -> uint8 (N, size, size, C): PIL `Image.resize(BILINEAR)` per
  image."""
  gray = images.shape[-1] == 1
  return np.stack(
    [
      np.asarray(
        Image.fromarray(image[..., 0] if gray else image).resize((size, size), Image.BILINEAR)
      ).reshape(size, size, images.shape[-1])
      for image in images
    ]
  )


def _existing(path: str) -> pathlib.Path:
  resolved = pathlib.Path(path).expanduser()
  if not resolved.exists():
    raise FileNotFoundError(f"{resolved} does not exist")
  return resolved


def check_uint8_images(images, *, name: str = "images") -> np.ndarray:
  """Checks uint8 NHWC images with 1 or 3 channels and at least one image; returns a numpy array."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(
      f"{name} must have shape (N, H, W, C) with C = 1 or 3 (NHWC), got shape {images.shape}; "
      "add a channel axis to grayscale (N, H, W) arrays with x[..., None]"
    )
  if images.dtype != np.uint8:
    raise TypeError(f"{name} must be uint8 in 0..255, got dtype {images.dtype}")
  if not len(images) or not images.shape[1] or not images.shape[2]:
    raise ValueError(f"{name} must hold at least one non-empty image, got shape {images.shape}")
  return images


def as_uint8_images(array: np.ndarray, where: str) -> np.ndarray:
  """uint8 NHWC as is; other integers in 0..255 cast; floats in [0, 1] -> round(255 x); checked."""
  array = np.asarray(array)
  if array.dtype.kind not in "uif":  # no min/max for strings, records, dates; bool, complex refused
    raise ValueError(
      f"{where}: images must be uint8, integers in 0..255 or floats in [0, 1]; "
      f"got dtype {array.dtype}"
    )
  if not array.size:
    array = array.astype(np.uint8)  # no values to convert: check_uint8_images names the shape
  elif array.dtype != np.uint8:
    low, high = array.min(), array.max()
    if np.issubdtype(array.dtype, np.integer) and low >= 0 and high <= 255:
      array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating) and low >= 0 and high <= 1:  # False for NaN
      array = np.round(array * 255).astype(np.uint8)
    else:
      raise ValueError(
        f"{where}: images must be uint8, integers in 0..255 or floats in [0, 1]; "
        f"got dtype {array.dtype} with values in [{low}, {high}]"
      )
  return check_uint8_images(array, name=where)


def as_labels(array: np.ndarray, count: int, where: str) -> np.ndarray:
  """Checks that `array` holds `count` integer labels and returns them as int64."""
  array = np.asarray(array)
  if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
    raise ValueError(
      f"{where}: labels must be {count} integers (shape ({count},)), got "
      f"shape {array.shape} and dtype {array.dtype}"
    )
  return array.astype(np.int64)


def _read_arrays(path: pathlib.Path, split: str, kind: str):
  """Returns (images key, images, labels key, labels or None) read from a .npy or .npz file."""
  loaded = np.load(path, allow_pickle=False)
  if kind == "npy":
    if isinstance(loaded, np.lib.npyio.NpzFile):
      loaded.close()
      raise ValueError(f"it is an .npz archive, not a .npy array (use npz:{path})")
    return "array", loaded, None, None
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    raise ValueError(f"it is a .npy array, not an .npz archive (use npy:{path})")
  with loaded as archive:
    keys = list(archive.keys())
    if f"x_{split}" in keys:
      image_key, label_key = f"x_{split}", f"y_{split}"
    elif "x" in keys:
      image_key, label_key = "x", "y"
    elif len(keys) == 1:
      image_key, label_key = keys[0], None
    else:
      raise KeyError(
        f"it has keys {keys}; expected x (and y), x_{split} (and y_{split}), or a single array"
      )
    labels = archive[label_key] if label_key in keys else None
    return image_key, archive[image_key], label_key, labels


def load_array_file(path: str, split: str, kind: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Reads a `.npz` (keys x_<split>/y_<split>, else x/y, else its one array) or a `.npy` file."""
  resolved = _existing(path)
  try:
    image_key, images, label_key, labels = _read_arrays(resolved, split, kind)
  except Exception as error:  # a corrupt file raises whatever numpy, zipfile, zlib or tokenize do
    raise ValueError(f"cannot read {resolved} as a .{kind} file of images: {error}") from error
  images = as_uint8_images(images, f"{resolved}[{image_key!r}]")
  if labels is not None:
    labels = as_labels(labels, len(images), f"{resolved}[{label_key!r}]")
  return images, labels


def _image_files(folder: pathlib.Path) -> List[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: pathlib.Path) -> Image.Image:
  try:
    with Image.open(path) as image:
      image.load()
  except Exception as error:  # a corrupt file: OSError, SyntaxError, DecompressionBombError, ...
    raise ValueError(f"cannot read image file {path}: {error}") from error
  if image.mode not in EIGHT_BIT_MODES:  # 16-bit, 32-bit and float images would be clipped to 255
    raise ValueError(
      f"image file {path} has mode {image.mode!r}: only 8-bit images (modes "
      f"{', '.join(EIGHT_BIT_MODES)}) are read; convert it to 8 bits first"
    )
  return image


def folder_files(path: str, split: str) -> Tuple[List[pathlib.Path], Optional[np.ndarray]]:
  """The image files `load_folder` reads, in its order, and their labels (None without classes)."""
  folder = _existing(path)
  if not folder.is_dir():
    raise NotADirectoryError(f"{folder} is not a folder")
  if (folder / split).is_dir():
    folder = folder / split
  files, labels = _image_files(folder), None
  if not files:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and _image_files(p))
    for index, class_folder in enumerate(classes):
      class_files = _image_files(class_folder)
      files += class_files
      labels = (labels or []) + [index] * len(class_files)
  if not files:
    raise ValueError(
      f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} files, neither directly nor in "
      "class subfolders"
    )
  return files, None if labels is None else np.asarray(labels, np.int64)


def load_folder(path: str, split: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Reads PNG/JPEG files from `path/<split>` if that is a folder, else from `path`.

  Image files directly in the folder: labels None. Otherwise one subfolder per class, in sorted
  order, each holding image files: label = the subfolder's index. All images must have one size;
  all-grayscale sets give C = 1, anything else is converted to RGB (C = 3).
  """
  files, labels = folder_files(path, split)
  images = [_read_image(p) for p in files]
  gray = all(image.mode == "L" for image in images)
  arrays = [np.asarray(image if gray else image.convert("RGB")) for image in images]
  for p, array in zip(files, arrays):
    if array.shape[:2] != arrays[0].shape[:2]:
      raise ValueError(
        f"images differ in size: {files[0]} is {arrays[0].shape[1]}x"
        f"{arrays[0].shape[0]}, {p} is {array.shape[1]}x{array.shape[0]} (W x H); "
        "resize them to one size first"
      )
  stacked = np.stack(arrays)
  if gray:
    stacked = stacked[..., None]
  return stacked, labels
