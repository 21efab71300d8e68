"""Input pipelines: whole splits as uint8 arrays, preprocessing to the model's input, batches.

sources.py   dataset names and splits (the syntax), `load_split`: a whole split as uint8 arrays
pipeline.py  `preprocess`, `load_images` (load + preprocess), `batches` of this process's shard
offline.py   the embedded offline sets (digits, noise, ...); nothing is downloaded
files.py     .npz / .npy files and image folders; PIL resizing
tfds.py      tensorflow-datasets datasets (array_record without TensorFlow)
jpeg.py      the JPEG round trip of the fair protocol
png.py       PNG lengths (input complexity)
"""

from inflow_jax.data.pipeline import batches, load_images, preprocess, process_shard
from inflow_jax.data.sources import (
  CELEB_A_CROP,
  FILE_PREFIXES,
  Labels,
  default_center_crop,
  known_names,
  load_split,
  parse_name,
  slice_split,
)
