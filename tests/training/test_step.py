"""The batches of the data-parallel step (`inflow_jax.training.step.local_batches`): a function of
the step alone (exact resume), per process, with their labels."""

import numpy as np
from helpers import tiny_images

from inflow_jax.training.step import local_batches


def test_batches_depend_only_on_the_step():
  x = tiny_images(n=40)
  whole = local_batches(x, batch_size=8, seed=3)
  reference = [next(whole) for _ in range(12)]  # 5 steps per epoch: crosses two epoch boundaries
  for start in (0, 4, 5, 7):
    resumed = local_batches(x, batch_size=8, seed=3, start_step=start)
    for step in range(start, 12):
      np.testing.assert_array_equal(next(resumed), reference[step])
  assert not np.array_equal(reference[0], reference[5])  # epochs are reshuffled
  halves = [
    local_batches(x, batch_size=8, seed=3, process_index=i, process_count=2) for i in range(2)
  ]
  first = [next(h) for h in halves]
  assert first[0].shape == (4, 32, 32, 3)
  assert not np.array_equal(first[0], first[1])


def test_labelled_batches_are_the_image_batches_with_their_labels():
  x = tiny_images(n=40)
  labels = np.arange(40)[::-1].copy()  # label i <-> image 39 - i
  images = local_batches(x, batch_size=8, seed=3, start_step=3)
  labelled = local_batches(x, batch_size=8, seed=3, start_step=3, labels=labels)
  for _ in range(4):  # crosses an epoch boundary
    x_batch, y_batch = next(labelled)
    np.testing.assert_array_equal(x_batch, next(images))
    np.testing.assert_array_equal(x_batch, x[39 - y_batch])
