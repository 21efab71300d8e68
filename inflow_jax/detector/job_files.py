"""The detector a job leaves in its workdir: `<workdir>/detector/` (`InFlowDetector.save`) plus
`input_shape.json`, the native (H, W, C) of the training images that the score mode's inputs must
match."""

import json
import pathlib
import shutil

DETECTOR_DIR = "detector"
INPUT_SHAPE_FILE = "input_shape.json"


def save_job_detector(workdir, detector, input_shape) -> pathlib.Path:
  """Saves the job's detector to `<workdir>/detector/` (replacing an older one only once the new one
  is complete) with the native (H, W, C) of the training images."""
  workdir = pathlib.Path(workdir)
  final, tmp, old = (
    workdir / DETECTOR_DIR,
    workdir / f".{DETECTOR_DIR}.tmp",
    workdir / f".{DETECTOR_DIR}.old",
  )
  for path in (tmp, old):
    if path.exists():
      shutil.rmtree(path)
  detector.save(tmp)
  (tmp / INPUT_SHAPE_FILE).write_text(json.dumps([int(s) for s in input_shape]))
  if final.exists():
    final.rename(old)
  tmp.rename(final)
  if old.exists():
    shutil.rmtree(old)
  return final
