"""tensorflow-datasets sources (`inflow_jax.data.tfds`): datasets built locally and read back, as
array_record without TensorFlow and as tfrecord, and the error of one not prepared."""

import pathlib
import re
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from helpers import REPO

from inflow_jax import data

# The builders' module as tfds sees it: a name without a dot, so that tfds looks for no code folder
# (checksums) next to them; from a dotted module name (`tests.data.test_tfds`) it asks
# `importlib_resources`, which the test environment need not have.
BUILDER_MODULE = "tiny_tfds_builders"


def _random_images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _tiny_builder_class(tfds, image_shape, dataset_name):
  """A tfds GeneratorBasedBuilder of a few random images, unregistered (read back from its
  files)."""

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    __module__ = BUILDER_MODULE
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
  """tfds's own MNIST builder with its real features, generating tiny_examples instead of
  downloading."""
  from tensorflow_datasets.image_classification import mnist  # pylint: disable=g-import-not-at-top

  class TinyMnist(mnist.MNIST, skip_registration=True):
    __module__ = BUILDER_MODULE
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
