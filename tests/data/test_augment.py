"""The training augmentation (`inflow_jax.data.augment`) against direct numpy constructions."""

import jax
import numpy as np

from inflow_jax.data import augment


def _images(n=6, size=5):
  return np.random.default_rng(0).random((n, size, size, 2)).astype(np.float32)


def test_translation_is_a_reflected_crop_of_every_image():
  x, pad = _images(), 2
  out = np.asarray(augment.random_translate(jax.random.PRNGKey(3), x, pad))
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  for image, result in zip(padded, out):
    crops = [image[i : i + 5, j : j + 5] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    assert any(np.array_equal(result, c) for c in crops)
  assert not np.array_equal(out, x)  # some image moved


def test_flip_mirrors_about_half_of_the_images():
  x = _images(n=400)
  out = np.asarray(augment.random_flip(jax.random.PRNGKey(0), x))
  flipped = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)])
  kept = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
  assert np.all(flipped | kept)
  assert 150 < flipped.sum() < 250  # Binomial(400, 1/2): 5 standard deviations either side


def test_augmentation_is_a_pure_function_of_the_key():
  x = _images()
  a = augment.augment(jax.random.PRNGKey(7), x)
  np.testing.assert_array_equal(a, augment.augment(jax.random.PRNGKey(7), x))
  assert not np.array_equal(a, augment.augment(jax.random.PRNGKey(8), x))


def test_rotation_turns_each_image_by_its_own_k():
  x = _images(n=4)
  k = np.array([0, 1, 2, 3])
  out = np.asarray(augment.rotate90(x, k))
  for image, turned, turns in zip(x, out, k):
    np.testing.assert_array_equal(turned, np.rot90(image, turns, axes=(0, 1)))
