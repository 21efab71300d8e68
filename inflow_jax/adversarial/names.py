"""How the adversarial sets are named in the tables."""

import pathlib


def eps_name(epsilon: float) -> str:
  """'8' for 8/255, '0.5' for 0.5/255: the set-name suffix of an epsilon."""
  return f"{epsilon * 255:.3g}"


def set_name_prefix(dataset: str) -> str:
  """The prefix of the classifier-attack sets of a test dataset: 'cifar10' for 'cifar10', 'photos'
  for '/data/photos.npz' (the file or folder name), 'in' when there is none."""
  return pathlib.PurePath(str(dataset)).stem or "in"
