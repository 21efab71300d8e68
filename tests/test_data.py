"""Tests of inflow_jax.data: every source, preprocessing, batching and sharding, and the errors."""

import pathlib
import re
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from helpers import REPO, shared_file
from PIL import Image
from sklearn.datasets import load_digits

from inflow_jax import data
from inflow_jax.data import offline as offline_data

OFFLINE = offline_data.OFFLINE_SETS


# ----------------------------------------------------------------------------- offline sets


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_set_shapes_range_and_determinism(name):
  expected = {"digits": (1400, 397), "digits_inverted": (1400, 397)}.get(name, (500, 500))
  train, train_labels = data.load_split(name, "train")
  test, _ = data.load_split(name, "test")
  assert train.dtype == np.uint8 and train.shape == (expected[0], 32, 32, 3)
  assert test.shape == (expected[1], 32, 32, 3)
  again, again_labels = data.load_split(name, "train")
  np.testing.assert_array_equal(train, again)
  np.testing.assert_array_equal(train_labels, again_labels)
  assert train.astype(float).std() > 0 or name == "constant"
  assert not np.array_equal(train[: len(test)], test)  # the splits are different draws


def test_digits_are_sklearn_digits_upsampled_and_split():
  train, train_labels = data.load_split("digits", "train")
  test, test_labels = data.load_split("digits", "test")
  sklearn = load_digits()
  np.testing.assert_array_equal(
    np.bincount(np.concatenate([train_labels, test_labels])), np.bincount(sklearn.target)
  )
  # Each 32x32 image, averaged over 4x4 blocks, is nearest to an original 8x8 digit of its label.
  originals = sklearn.images.reshape(len(sklearn.images), -1) * (255 / 16)
  for images, labels in ((train[:100], train_labels[:100]), (test, test_labels)):
    blocks = images[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(len(images), -1)
    nearest = np.argmin(((blocks[:, None] - originals[None]) ** 2).sum(-1), axis=1)
    assert np.mean(sklearn.target[nearest] == labels) > 0.98
  assert np.all(train[..., 0] == train[..., 2])  # grayscale repeated
  inverted, inverted_labels = data.load_split("digits_inverted", "test")
  np.testing.assert_array_equal(inverted, 255 - test)
  np.testing.assert_array_equal(inverted_labels, test_labels)


def test_offline_far_ood_sets_have_their_statistics():
  uniform, _ = data.load_split("uniform_noise", "test")
  gaussian, _ = data.load_split("gaussian_noise", "test")
  constant, labels = data.load_split("constant", "test")
  assert labels is None
  assert abs(uniform.mean() - 127.5) < 1 and abs(uniform.std() - 255 / np.sqrt(12)) < 1
  assert abs(gaussian.mean() - 127.5) < 1 and 55 < gaussian.std() < 64  # 0.25*255, clipped a little
  assert np.all(constant == constant[:, :1, :1, :])
  patches, _ = data.load_split("photo_patches", "test")
  assert patches.std() > 10 and len(np.unique(patches.reshape(len(patches), -1), axis=0)) == len(
    patches
  )


def test_split_slicing():
  full, labels = data.load_split("digits", "test")
  head, head_labels = data.load_split("digits", "test[:10]")
  np.testing.assert_array_equal(head, full[:10])
  np.testing.assert_array_equal(head_labels, labels[:10])
  tail, _ = data.load_split("digits", "test[-10%:]")
  np.testing.assert_array_equal(tail, full[-40:])  # round(397 * 0.1) = 40
  with pytest.raises(ValueError, match="SPLIT"):
    data.load_split("digits", "test[::2]")
  with pytest.raises(ValueError, match="splits"):
    data.load_split("digits", "validation")
  with pytest.raises(ValueError, match="empty"):
    data.load_split("digits", "test[5:5]")


def test_unknown_name_lists_known_ones(tmp_path):
  with pytest.raises(ValueError, match=r"digits.*npz:PATH.*cifar10"):
    data.load_split("no_such_dataset_xyz", "test", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- preprocess


def test_preprocess_resizes_grayscale_with_pil_bilinear():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
  x = data.preprocess(images, 32)
  assert x.dtype == np.float32 and x.shape == (3, 32, 32, 3)
  expected = np.asarray(Image.fromarray(images[1, ..., 0]).resize((32, 32), Image.BILINEAR)) / 255
  for channel in range(3):
    np.testing.assert_allclose(x[1, ..., channel], expected, atol=1e-6)


def test_preprocess_at_size_is_division_and_crop_is_centred():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  np.testing.assert_allclose(data.preprocess(images), images / 255.0, atol=1e-7)
  faces = rng.integers(0, 256, (2, 218, 178, 3), dtype=np.uint8)  # CelebA's size
  cropped = data.preprocess(faces, image_size=140, center_crop=140)
  np.testing.assert_allclose(
    cropped, faces[:, 39:179, 19:159] / 255.0, atol=1e-7
  )  # (218-140)/2, (178-140)/2
  assert data.preprocess(faces, 32, center_crop=140).shape == (2, 32, 32, 3)
  assert data.default_center_crop("celeb_a") == 140
  assert data.default_center_crop("tfds:celeb_a:2.1.0") == 140
  assert data.default_center_crop("npz:/data/celeba_3k.npz") is None
  assert data.default_center_crop("cifar10") is None


def test_preprocess_rejects_bad_images():
  with pytest.raises(TypeError, match="uint8"):
    data.preprocess(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="shape"):
    data.preprocess(np.zeros((2, 32, 32), np.uint8))
  with pytest.raises(ValueError, match="shape"):
    data.preprocess(np.zeros((2, 32, 32, 4), np.uint8))
  with pytest.raises(ValueError, match="center_crop"):
    data.preprocess(np.zeros((2, 32, 32, 3), np.uint8), center_crop=140)
  with pytest.raises(ValueError, match="image_size"):
    data.preprocess(np.zeros((2, 32, 32, 3), np.uint8), image_size=0)


# ----------------------------------------------------------------------------- user files


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
  np.testing.assert_array_equal(got, images[..., :1]) and got_labels is None
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


# ----------------------------------------------------------------------------- batches


def _id_images(n):
  """Float images in [0, 1] whose pixel (0, 0) encodes the index: id = 255 * (c0 + 256 * c1)."""
  x = np.zeros((n, 4, 4, 3), np.float32)
  x[:, 0, 0, 0] = (np.arange(n) % 256) / 255
  x[:, 0, 0, 1] = (np.arange(n) // 256) / 255
  return x


def _ids(batch):
  return np.round(batch[:, 0, 0, 0] * 255).astype(int) + 256 * np.round(
    batch[:, 0, 0, 1] * 255
  ).astype(int)


def test_batches_shuffle_is_seeded_and_an_epoch_is_a_permutation():
  x = _id_images(100)
  first = [_ids(b) for b in data.batches(x, 10, seed=3)]
  again = [_ids(b) for b in data.batches(x, 10, seed=3)]
  other = [_ids(b) for b in data.batches(x, 10, seed=4)]
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  np.testing.assert_array_equal(np.sort(np.concatenate(first)), np.arange(100))
  in_order = np.concatenate([_ids(b) for b in data.batches(x, 10, seed=0, shuffle=False)])
  np.testing.assert_array_equal(in_order, np.arange(100))
  stream = data.batches(x, 25, seed=0, repeat=True)
  epochs = [np.concatenate([_ids(next(stream)) for _ in range(4)]) for _ in range(2)]
  assert all(np.array_equal(np.sort(e), np.arange(100)) for e in epochs)
  assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("shuffle", [True, False])
def test_process_shards_are_disjoint_and_cover(shuffle):
  n, count, size = 103, 3, 8
  x = _id_images(n)
  dropped = [
    [
      _ids(b)
      for b in data.batches(x, size, seed=1, shuffle=shuffle, process_index=k, process_count=count)
    ]
    for k in range(count)
  ]
  assert {len(d) for d in dropped} == {n // count // size}  # same number of steps everywhere
  dropped_ids = np.concatenate([np.concatenate(d) for d in dropped])
  assert len(np.unique(dropped_ids)) == len(dropped_ids) == count * (n // count // size) * size
  padded = [
    list(
      data.batches(
        x,
        size,
        seed=1,
        shuffle=shuffle,
        drop_remainder=False,
        pad=True,
        process_index=k,
        process_count=count,
      )
    )
    for k in range(count)
  ]
  assert {len(p) for p in padded} == {int(np.ceil(np.ceil(n / count) / size))}
  real = np.concatenate([_ids(b)[mask] for p in padded for b, mask in p])
  np.testing.assert_array_equal(np.sort(real), np.arange(n))  # disjoint and covering
  assert all(b.shape == (size, 4, 4, 3) and not b[~mask].any() for p in padded for b, mask in p)
  kept = [
    b
    for k in range(count)
    for b in data.batches(
      x, size, seed=1, shuffle=shuffle, drop_remainder=False, process_index=k, process_count=count
    )
  ]
  np.testing.assert_array_equal(np.sort(np.concatenate([_ids(b) for b in kept])), np.arange(n))


def test_batches_convert_uint8_per_batch():
  images = _random_images((20, 28, 28, 1))
  batch = next(data.batches(images, 5, seed=0, shuffle=False, image_size=32))
  np.testing.assert_allclose(batch, data.preprocess(images[:5], 32), atol=1e-7)
  batch = next(data.batches(images[..., :1].repeat(3, -1), 5, seed=0, shuffle=False))
  assert batch.dtype == np.float32 and batch.shape == (5, 28, 28, 3)


def test_batches_errors():
  x = _id_images(10)
  with pytest.raises(ValueError, match="drop_remainder"):
    next(data.batches(x, 4, seed=0, pad=True))
  with pytest.raises(ValueError, match="fewer than one batch"):
    next(data.batches(x, 4, seed=0, process_index=0, process_count=4))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    next(data.batches(x + 1, 4, seed=0))
  with pytest.raises(ValueError, match="process_index"):
    next(data.batches(x, 2, seed=0, process_index=2, process_count=2))
  with pytest.raises(ValueError, match="square"):
    next(data.batches(_random_images((4, 8, 6, 3)), 2, seed=0))


# ----------------------------------------------------------------------------- shared data


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


# ----------------------------------------------------------------------------- tfds, for real


def _tiny_builder_class(tfds, image_shape, dataset_name):
  """A tfds GeneratorBasedBuilder of a few random images, unregistered (read back from its files)."""

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = dataset_name
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(shape=image_shape),
            "label": tfds.features.ClassLabel(num_classes=3),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split):
      images, labels = tiny_examples(image_shape, split)
      for i, (image, label) in enumerate(zip(images, labels)):
        yield i, {"image": image, "label": label}

  return Builder


def tiny_examples(image_shape, split):
  count = 6 if split == "train" else 4
  return _random_images((count,) + image_shape, seed=len(split)), np.arange(count) % 3


def _tiny_mnist_class(tfds):
  """tfds's own MNIST builder with its real features, generating tiny_examples instead of downloading."""
  from tensorflow_datasets.image_classification import mnist  # pylint: disable=g-import-not-at-top

  class TinyMnist(mnist.MNIST, skip_registration=True):
    name = "mnist"

    def _split_generators(self, dl_manager):
      return {split: self._generate_tiny(split) for split in ("train", "test")}

    def _generate_tiny(self, split):
      images, labels = tiny_examples((28, 28, 1), split)
      for i, (image, label) in enumerate(zip(images, labels)):
        yield i, {"image": image, "label": label}

  return TinyMnist


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  """A data_dir holding `inflow_tiny_rgb` (array_record), `inflow_tiny_gray` (tfrecord) and a tiny
  `mnist` (array_record, read back by tfds's registered MNIST builder)."""
  pytest.importorskip(
    "tensorflow", reason="building a tfds dataset needs TensorFlow (the tfds-build extra)"
  )
  tfds = pytest.importorskip("tensorflow_datasets")
  data_dir = tmp_path_factory.mktemp("tfds")
  for shape, name, file_format in (
    ((8, 8, 3), "inflow_tiny_rgb", "array_record"),
    ((10, 10, 1), "inflow_tiny_gray", "tfrecord"),
  ):
    builder = _tiny_builder_class(tfds, shape, name)(
      data_dir=str(data_dir), file_format=file_format
    )
    builder.download_and_prepare()
  _tiny_mnist_class(tfds)(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return str(data_dir)


def _sorted_by_content(images, labels):
  order = np.lexsort(images.reshape(len(images), -1).T)
  return images[order], labels[order]


@pytest.mark.parametrize(
  "name, shape",
  [("inflow_tiny_rgb", (8, 8, 3)), ("inflow_tiny_gray", (10, 10, 1)), ("mnist", (28, 28, 1))],
)
def test_tfds_dataset_built_locally_reads_back(tiny_tfds, name, shape):
  for split in ("train", "test"):
    images, labels = data.load_split(name, split, data_dir=tiny_tfds)
    expected = tiny_examples(shape, split)
    for got, want in zip(_sorted_by_content(images, labels), _sorted_by_content(*expected)):
      np.testing.assert_array_equal(got, want)  # tfds stores in its own (hashed) order
  head, _ = data.load_split(f"tfds:{name}", "train[:2]+test[:1]", data_dir=tiny_tfds)
  assert head.shape == (3,) + shape
  x, _ = data.load_images(name, "test", data_dir=tiny_tfds)
  raw, _ = data.load_split(name, "test", data_dir=tiny_tfds)
  np.testing.assert_array_equal(x, data.preprocess(raw, 32))
  assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32


def test_tfds_array_record_reads_without_tensorflow(tiny_tfds, tmp_path):
  """load_split in a Python whose site-packages lacks TensorFlow (the others linked in)."""
  site = tmp_path / "site-packages"
  site.mkdir()
  package_dirs = [sysconfig.get_paths()[key] for key in ("purelib", "platlib")] + [
    p for p in sys.path if p.endswith(("site-packages", "dist-packages"))
  ]
  for package_dir in dict.fromkeys(
    pathlib.Path(p) for p in package_dirs if pathlib.Path(p).is_dir()
  ):
    for entry in package_dir.iterdir():
      keep = not re.match(
        r"(tensorflow|tf_keras|keras)($|[-_.])", entry.name
      ) or entry.name.startswith(("tensorflow_datasets", "tensorflow_metadata"))
      if keep and not (site / entry.name).exists():
        (site / entry.name).symlink_to(entry)
  script = (
    f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(site)!r}]\n"
    'import importlib.util; assert importlib.util.find_spec("tensorflow") is None\n'
    "from inflow_jax import data\n"
    f'images, labels = data.load_split("inflow_tiny_rgb", "train", data_dir={tiny_tfds!r})\n'
    'assert "tensorflow" not in sys.modules\n'
    "print(images.shape, int(images.astype(int).sum()), labels.tolist())\n"
  )
  result = subprocess.run(
    [sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=120, check=False
  )
  assert result.returncode == 0, result.stderr[-3000:]
  images, labels = data.load_split("inflow_tiny_rgb", "train", data_dir=tiny_tfds)
  assert (
    result.stdout.split("\n")[0]
    == f"{images.shape} {int(images.astype(int).sum())} {labels.tolist()}"
  )


def test_tfds_not_prepared_is_a_clear_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(FileNotFoundError, match=r"not prepared.*tfds build mnist"):
    data.load_split("mnist", "test", data_dir=str(tmp_path))
