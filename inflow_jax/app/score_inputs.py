"""The score mode's inputs: the detector (a job's workdir or a pretrained name) and the images to
score (any data source, checked against the detector's native input shape). Bad input raises
`ScoreError`, whose one-line message run.py prints."""

import json
import pathlib
from typing import Any, Dict

from inflow_jax import data as data_lib
from inflow_jax import pretrained
from inflow_jax.app.cli import bare_path_problem
from inflow_jax.data import files as image_files
from inflow_jax.detector import InFlowDetector
from inflow_jax.detector.job_files import DETECTOR_DIR, INPUT_SHAPE_FILE


class ScoreError(ValueError):
  """A bad input, workdir or output of the score mode (a one-line message)."""


def load_job_detector(workdir) -> tuple:
  """(detector, the job's config dict, native input shape) of a workdir, or ScoreError."""
  workdir = pathlib.Path(workdir)
  directory = workdir / DETECTOR_DIR
  if not directory.is_dir():
    raise ScoreError(
      f"{workdir} holds no saved detector ({directory} is missing): run the job with "
      "--mode=all or --mode=evaluate on it first"
    )
  try:
    config = json.loads((workdir / "config.json").read_text())
    input_shape = tuple(json.loads((directory / INPUT_SHAPE_FILE).read_text()))
    detector = InFlowDetector.load(directory)
  except (OSError, ValueError, KeyError) as error:
    raise ScoreError(f"cannot load the detector of {workdir}: {error}") from error
  return detector, config, input_shape


def load_pretrained(name: str) -> tuple:
  """(detector, a config dict with `data`, native input shape) of a pretrained detector, or
  ScoreError naming the known names."""
  try:
    detector = pretrained.load(name)
    meta = pretrained.manifest(name)
  except (OSError, ValueError, KeyError) as error:
    raise ScoreError(f"--detector {name}: {error}") from error
  data = {"data_dir": None, "image_size": meta["image_size"]}
  return detector, {"data": data}, tuple(meta["input_shape"])


def load_inputs(source: str, split: str, config: Dict[str, Any], input_shape, resize: bool):
  """(x float32 NHWC in [0, 1] at the detector's size, file paths or None) of `source`."""
  data = config["data"]
  problem = bare_path_problem(source)
  if problem:
    raise ScoreError(problem)
  try:
    images, _ = data_lib.load_split(source, split, data["data_dir"])
    paths = None
    if data_lib.parse_name(source)[0] == "folder":
      paths = [str(p) for p in image_files.folder_files(data_lib.parse_name(source)[1], split)[0]]
  except (OSError, ValueError, TypeError) as error:
    raise ScoreError(f"--input {source!r}: {error}") from error
  if len(images) < 2:
    raise ScoreError(
      f"--input {source!r} holds {len(images)} image(s); the attention test needs >= 2"
    )
  if tuple(images.shape[1:]) != tuple(input_shape) and not resize:
    raise ScoreError(
      f"--input {source!r} holds {'x'.join(map(str, images.shape[1:]))} (HxWxC) images, "
      f"but the detector was trained on {'x'.join(map(str, input_shape))} images; pass "
      "--resize to resize them as the job's preprocessing does"
    )
  x = data_lib.preprocess(images, data["image_size"], data_lib.default_center_crop(source))
  return x, paths
