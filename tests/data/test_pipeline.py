"""Preprocessing and batches (`inflow_jax.data.pipeline`): PIL's bilinear resize, the centre crop,
seeded shuffles, disjoint covering process shards, padding, and the errors."""

import numpy as np
import pytest
from PIL import Image

from inflow_jax import data


def _random_images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


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
  # (218-140)/2, (178-140)/2
  np.testing.assert_allclose(cropped, faces[:, 39:179, 19:159] / 255.0, atol=1e-7)
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
