"""The embedded offline sets (`inflow_jax.data.offline`): shapes, determinism, the digits against
scikit-learn's, and the far-OOD sets' statistics."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from inflow_jax import data
from inflow_jax.data import offline as offline_data

OFFLINE = offline_data.OFFLINE_SETS


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
  distinct = np.unique(patches.reshape(len(patches), -1), axis=0)
  assert patches.std() > 10 and len(distinct) == len(patches)
