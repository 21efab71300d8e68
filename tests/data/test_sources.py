"""Dataset names and splits (`inflow_jax.data.sources`): split slicing, unknown names."""

import numpy as np
import pytest

from inflow_jax import data


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
