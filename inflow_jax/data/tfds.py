"""tensorflow-datasets as a source of whole splits (uint8 NHWC images, int64 labels or None).

`tfds.builder(name, data_dir=...)` finds registered datasets (cifar10, mnist, ...) and any dataset
prepared in `data_dir` (read back from its files). array_record datasets are read with
`builder.as_data_source` (random access, no TensorFlow needed); tfrecord datasets
(tfds's default format) with `builder.as_dataset`, which needs TensorFlow. `tensorflow_datasets` is
imported only here and only when a tfds dataset is asked for, so the offline sets and user files
never import it.
"""

from typing import Optional, Tuple

import numpy as np

STANDARD_DATASETS = ("cifar10", "cifar100", "svhn_cropped", "mnist", "fashion_mnist", "celeb_a")
_CHUNK = 4096


def _feature_keys(builder, tfds) -> Tuple[str, Optional[str]]:
  """(image feature key, class-label key or None) of a tfds dataset."""
  features = builder.info.features
  images = [key for key, feature in features.items() if isinstance(feature, tfds.features.Image)]
  if not images:
    raise ValueError(f"tfds dataset {builder.name!r} has no image feature: features {features}")
  image_key = "image" if "image" in images else images[0]
  label = features["label"] if "label" in features.keys() else None  # noqa: SIM118 (FeaturesDict)
  label_key = "label" if isinstance(label, tfds.features.ClassLabel) else None
  return image_key, label_key


def _stack(chunks, name: str) -> np.ndarray:
  shapes = {chunk.shape[1:] for chunk in chunks}
  if len(shapes) > 1:
    raise ValueError(
      f"tfds dataset {name!r} has images of several shapes {sorted(shapes)}; "
      "load_split needs one size"
    )
  return np.concatenate(chunks)


def _read_data_source(builder, split, image_key, label_key):
  source = builder.as_data_source(split=split)
  images, labels = [], []
  for start in range(0, len(source), _CHUNK):
    examples = source.__getitems__(list(range(start, min(start + _CHUNK, len(source)))))
    try:
      images.append(np.stack([example[image_key] for example in examples]))
    except ValueError as error:
      raise ValueError(
        f"tfds dataset {builder.name!r}: images of several shapes ({error}); "
        "load_split needs one size"
      ) from error
    if label_key:
      labels.append(np.asarray([example[label_key] for example in examples]))
  return images, labels


def _read_tfrecord(builder, split, image_key, label_key, tfds):
  try:
    import tensorflow as tf  # noqa: F401  (only whether TensorFlow is there)
  except ImportError as error:
    raise ImportError(
      f"tfds dataset {builder.name!r} is stored as {builder.info.file_format.value}: reading it "
      "needs TensorFlow (pip install 'inflow_jax[tfds-build]'); array_record datasets are read "
      "without it: prepare with `tfds build --file_format=array_record` or convert with "
      "`tfds convert_format --out_file_format=array_record`"
    ) from error
  keys = (image_key,) + ((label_key,) if label_key else ())
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  dataset = dataset.map(lambda example: {key: example[key] for key in keys}).batch(_CHUNK)
  images, labels = [], []
  for batch in tfds.as_numpy(dataset):
    images.append(batch[image_key])
    if label_key:
      labels.append(batch[label_key])
  return images, labels


def load_tfds(
  name: str, split: str, data_dir: Optional[str], *, download: bool = False, known_names: str = ""
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Reads a whole tfds split; error when the dataset is unknown or not prepared
  (and no download)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  options = dict(file_format="array_record") if download else {}
  try:
    builder = tfds.builder(name, data_dir=data_dir, **options)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise ValueError(
      f"unknown dataset {name!r} (not a tfds dataset, none prepared in data_dir "
      f"{data_dir}); known: {known_names}"
    ) from error
  if not builder.is_prepared():
    if not download:
      raise FileNotFoundError(
        f"tfds dataset {name!r} is not prepared in data_dir {data_dir or builder.data_dir}; "
        f"prepare it on a machine with internet (tfds build {name} --data_dir=DIR "
        "--file_format=array_record) and pass data_dir=DIR, or pass download=True"
      )
    try:
      builder.download_and_prepare()
    except Exception as error:  # pylint: disable=broad-except
      raise RuntimeError(
        f"could not download and prepare tfds dataset {name!r} into {builder.data_dir}: {error}"
      ) from error
  image_key, label_key = _feature_keys(builder, tfds)
  if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
    images, labels = _read_data_source(builder, split, image_key, label_key)
  else:
    images, labels = _read_tfrecord(builder, split, image_key, label_key, tfds)
  if not images:
    raise ValueError(f"split {split!r} of tfds dataset {name!r} is empty")
  images = _stack(images, name)
  if images.ndim == 3:
    images = images[..., None]
  return images, np.concatenate(labels).astype(np.int64) if label_key else None
