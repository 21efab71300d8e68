"""User files (`inflow_jax.data.files`): npz / npy arrays and folders of images, their errors, and
the ../shared data files."""

import numpy as np
import pytest
from helpers import shared_file
from PIL import Image

from inflow_jax import data


def _random_images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_npz_and_npy_files(tmp_path):
  images, labels = _random_images((7, 12, 12, 3)), np.arange(7) % 3
  np.savez(tmp_path / "xy.npz", x=images, y=labels)
  got, got_labels = data.load_split(f"npz:{tmp_path / 'xy.npz'}", "test")
  np.testing.assert_array_equal(got, images)
  np.testing.assert_array_equal(got_labels, labels)
  np.savez(tmp_path / "one.npz", images[..., :1])
  got, got_labels = data.load_split(f"npz:{tmp_path / 'one.npz'}", "train")
  np.testing.assert_array_equal(got, images[..., :1])
  assert got_labels is None
  np.savez(
    tmp_path / "splits.npz",
    x_train=images[:4],
    y_train=labels[:4],
    x_test=images[4:],
    y_test=labels[4:],
  )
  got, got_labels = data.load_split(f"npz:{tmp_path / 'splits.npz'}", "test")
  np.testing.assert_array_equal(got, images[4:])
  np.testing.assert_array_equal(got_labels, labels[4:])
  np.save(tmp_path / "floats.npy", images / 255.0)
  got, got_labels = data.load_split(f"npy:{tmp_path / 'floats.npy'}", "test[:3]")
  np.testing.assert_array_equal(got, images[:3])
  assert got_labels is None
  x, _ = data.load_images(f"npz:{tmp_path / 'one.npz'}", "test", image_size=16, max_images=5)
  assert x.shape == (5, 16, 16, 3) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1


def test_array_file_errors(tmp_path):
  (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
  with pytest.raises(ValueError, match="bad.npz"):
    data.load_split(f"npz:{tmp_path / 'bad.npz'}", "test")
  np.savez(tmp_path / "flat.npz", x=np.zeros((5, 28, 28), np.uint8))
  with pytest.raises(ValueError, match=r"shape \(5, 28, 28\)"):
    data.load_split(f"npz:{tmp_path / 'flat.npz'}", "test")
  np.savez(tmp_path / "keys.npz", a=np.zeros((1, 2, 2, 3)), b=np.zeros((1, 2, 2, 3)))
  with pytest.raises(ValueError, match="keys"):
    data.load_split(f"npz:{tmp_path / 'keys.npz'}", "test")
  np.savez(tmp_path / "range.npz", x=np.full((1, 2, 2, 3), 7.0))
  with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
    data.load_split(f"npz:{tmp_path / 'range.npz'}", "test")
  np.savez(tmp_path / "labels.npz", x=np.zeros((3, 2, 2, 3), np.uint8), y=np.zeros(2, int))
  with pytest.raises(ValueError, match="labels"):
    data.load_split(f"npz:{tmp_path / 'labels.npz'}", "test")
  with pytest.raises(FileNotFoundError):
    data.load_split(f"npy:{tmp_path / 'missing.npy'}", "test")


def test_npz_and_npy_prefixes_swapped(tmp_path):
  images = _random_images((3, 4, 4, 3))
  np.save(tmp_path / "array.npy", images)
  with pytest.raises(
    ValueError, match=r"array\.npy.*a \.npy array, not an \.npz archive \(use npy:"
  ):
    data.load_split(f"npz:{tmp_path / 'array.npy'}", "test")
  np.savez(tmp_path / "archive.npz", x=images)
  with pytest.raises(
    ValueError, match=r"archive\.npz.*an \.npz archive, not a \.npy array \(use npz:"
  ):
    data.load_split(f"npy:{tmp_path / 'archive.npz'}", "test")


def test_folder_with_class_subfolders_and_split_subfolder(tmp_path):
  images = _random_images((6, 9, 11, 3))
  for i, image in enumerate(images):
    folder = tmp_path / "train" / ("cat" if i < 2 else "dog")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"{i}.png")
  got, labels = data.load_split(f"folder:{tmp_path}", "train")
  np.testing.assert_array_equal(got, images)  # PNG is lossless, files sorted by name
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 1, 1])
  gray = tmp_path / "gray"
  gray.mkdir()
  for i, image in enumerate(images[..., 0]):
    Image.fromarray(image).save(gray / f"{i}.png")
  got, labels = data.load_split(f"folder:{gray}", "test")
  np.testing.assert_array_equal(got, images[..., :1])
  assert labels is None


def test_folder_errors(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no .png"):
    data.load_split(f"folder:{tmp_path / 'empty'}", "test")
  sizes = tmp_path / "sizes"
  sizes.mkdir()
  Image.fromarray(_random_images((8, 8, 3))).save(sizes / "a.png")
  Image.fromarray(_random_images((9, 8, 3))).save(sizes / "b.png")
  with pytest.raises(ValueError, match="differ in size"):
    data.load_split(f"folder:{sizes}", "test")
  broken = tmp_path / "broken"
  broken.mkdir()
  Image.fromarray(_random_images((8, 8, 3))).save(broken / "a.png")
  (broken / "b.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
  with pytest.raises(ValueError, match="b.jpg"):
    data.load_split(f"folder:{broken}", "test")


@pytest.mark.shared
@pytest.mark.parametrize(
  "file, count, shape",
  [
    ("cifar10_test_5k.npz", 5000, (32, 32, 3)),
    ("svhn_test_5k.npz", 5000, (32, 32, 3)),
    ("celeba_3k.npz", 3000, (32, 32, 3)),
    ("mnist_test_5k.npz", 5000, (28, 28, 1)),
    ("fashion_mnist_test_1k.npz", 1000, (28, 28, 1)),
  ],
)
def test_shared_npz_files(file, count, shape):
  path = shared_file(f"data/{file}")
  images, labels = data.load_split(f"npz:{path}", "test")
  assert images.shape == (count,) + shape and images.dtype == np.uint8
  assert labels is None or (labels.shape == (count,) and labels.dtype == np.int64)
  x, _ = data.load_images(f"npz:{path}", "test", max_images=200)
  assert x.shape == (200, 32, 32, 3) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
