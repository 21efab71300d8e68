"""`run.py --mode=score`: score new images with the detector that a job saved in its workdir.

  python run.py --mode=score --workdir DIR --input SOURCE [--output FILE] [--split S]
                [--batch-size M] [--stream] [--resize]

SOURCE is any data source name the job accepts (`npz:PATH`, `npy:PATH`, `folder:PATH`, a tfds name
with --split). The workdir holds `config.json` (the job's config: data_dir, image_size) and
`detector/` (`InFlowDetector.save`, plus `input_shape.json`: the native H, W, C of the training
images). Images keep the input's order; consecutive batches of the detector's `batch_size` are
tested by the attention (batch i with the key fold_in(PRNGKey(seed), i)) and scored with their a,
the flow split over all local devices (`make_sharded_score_fn`). With several processes
(`jax.distributed`) process k scores a contiguous block of whole batches and process 0 writes the
CSV. `--stream` gates each image as it arrives: by the window of the last `batch_size` images
(the images so far while it fills) and, with a conformal gate, its own p-value
(`inflow_jax.detector.stream`).

The CSV (`DIR/scores.csv` by default, LF line endings) has one row per image: index, path (folders
only), score, batch_p_value (the p-value of the image's batch, or of its window), image_p_value (the
image's own conformal p-value; NaN for the paper's gate), attention (the flow's a: 0 where the batch
or the image was flagged), is_ood (the verdict: with a conformal gate the image's own, p < level,
whatever its neighbours; with the paper's gate its batch's), batch_is_ood (the batch's or window's
verdict), tested_by (what the verdict rests on). It is written to a temporary file and renamed.
Bad input raises `ScoreError`, whose one-line message run.py prints.
"""

import csv
import os
import pathlib
import time
from typing import Dict, List, Optional

import jax
import numpy as np
import tqdm

from inflow_jax.app.cli import score_input_problem
from inflow_jax.app.score_inputs import (  # noqa: F401  (ScoreError and load_inputs: public here too)
  ScoreError,
  load_inputs,
  load_job_detector,
  load_pretrained,
)
from inflow_jax.training.step import make_mesh
from inflow_jax.utils.batching import batch_starts

SCORES_FILE = "scores.csv"


def _score_block(
  detector, x, batch_size: int, key, first_batch: int, mesh
) -> Dict[str, np.ndarray]:
  """The columns of x's batches (x preprocessed), scored by the detector (the flow split over mesh's
  devices for the paper's gate)."""
  result = detector.score_batches(
    x, key, batch_size=batch_size, first_batch=first_batch, preprocessed=True, mesh=mesh
  )
  image_p = result.image_p_values
  return {
    "score": result.scores,
    "batch_p_value": result.p_values[result.batch_index],
    "image_p_value": np.full(len(x), np.nan) if image_p is None else image_p,
    "attention": result.attention,
    "is_ood": detector.decide(result.attention, result.scores, image_p),
    "batch_is_ood": result.flagged[result.batch_index].astype(np.int64),
    "batch": first_batch + result.batch_index,
    "tested_by": _tested_by(detector, np.diff(result.batch_starts)[result.batch_index]),
  }


def _tested_by(detector, batch_sizes: np.ndarray) -> np.ndarray:
  """What tested each image in batch mode: its batch and, with a conformal gate, its own p-value."""
  if detector.conformal_state_ is None:
    return np.array([f"batch of {m} images (a verdict per batch)" for m in batch_sizes])
  return np.array([f"its own p-value (batch of {m} beside)" for m in batch_sizes])


def score_in_batches(
  detector,
  x: np.ndarray,
  batch_size: int,
  key,
  mesh,
  *,
  progress: bool = True,
  process_index: int = 0,
  process_count: int = 1,
) -> Dict[str, np.ndarray]:
  """This process's contiguous block of whole batches, 16 batches per `score_batches` call (a
  progress bar of images)."""
  starts = batch_starts(len(x), batch_size)
  mine = np.array_split(np.arange(len(starts) - 1), process_count)[process_index]
  parts: List[Dict[str, np.ndarray]] = []
  total = int(starts[mine[-1] + 1] - starts[mine[0]]) if len(mine) else 0
  with tqdm.tqdm(total=total, disable=not progress, desc="score", unit="images") as bar:
    for lo in range(0, len(mine), 16):
      first, last = int(mine[lo]), int(mine[min(lo + 16, len(mine)) - 1])
      block = _score_block(
        detector, x[starts[first] : starts[last + 1]], batch_size, key, first, mesh
      )
      block["index"] = np.arange(starts[first], starts[last + 1])
      parts.append(block)
      bar.update(len(block["index"]))
  names = ("index", "score", "batch_p_value", "image_p_value", "attention", "is_ood",
           "batch_is_ood", "batch", "tested_by")  # fmt: skip
  return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in names}


def write_csv(
  path: pathlib.Path, columns: Dict[str, np.ndarray], paths: Optional[List[str]]
) -> None:
  """The rows in index order, to a temporary file renamed onto `path`."""
  tmp = path.with_name(f".{path.name}.tmp")
  names = (
    ["index"]
    + (["path"] if paths is not None else [])
    + ["score", "batch_p_value", "image_p_value", "attention", "is_ood", "batch_is_ood"]
    + ["tested_by"]
  )
  with tmp.open("w", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(names)
    for i in range(len(columns["index"])):
      index = int(columns["index"][i])
      row = [index] + ([paths[index]] if paths is not None else [])
      row += [f"{columns[k][i]:.6g}" for k in ("score", "batch_p_value", "image_p_value")]
      row += [f"{columns['attention'][i]:g}", int(columns["is_ood"][i])]
      row += [int(columns["batch_is_ood"][i]), columns["tested_by"][i]]
      writer.writerow(row)
  os.replace(tmp, path)


def _check_output(output: pathlib.Path) -> None:
  if output.is_dir() or not output.parent.is_dir() or not os.access(output.parent, os.W_OK):
    raise ScoreError(
      f"--output {output} cannot be written (its folder is missing or not writable, "
      "or it is a folder)"
    )


def _gather_to_main(columns: Dict[str, np.ndarray], output: pathlib.Path) -> Optional[Dict]:
  """Every process's columns on process 0 (through files next to the output, after a barrier)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  part = output.with_name(f".{output.name}.part{jax.process_index()}.npz")
  np.savez(part, **columns)
  multihost_utils.sync_global_devices("inflow_scores_written")
  merged = None
  if jax.process_index() == 0:
    parts = [output.with_name(f".{output.name}.part{k}.npz") for k in range(jax.process_count())]
    loaded = [dict(np.load(p)) for p in parts]
    merged = {k: np.concatenate([p[k] for p in loaded]) for k in columns}
  multihost_utils.sync_global_devices("inflow_scores_read")
  part.unlink()
  return merged


def run_score(
  workdir,
  source: str,
  *,
  output=None,
  split: str = "test",
  batch_size=None,
  stream: bool = False,
  resize: bool = False,
  progress: bool = True,
  devices=None,
  detector_name: Optional[str] = None,
) -> Optional[Dict]:
  """Scores `source` with `<workdir>/detector` (or the pretrained detector `detector_name`, then
  workdir may be None: the CSV goes to `output` or ./scores.csv) and writes the CSV; returns the
  summary (process 0). devices: the local devices the flow is split over (default: all of this
  process's)."""
  problem = score_input_problem(source, workdir, detector_name)
  if problem:
    raise ScoreError(problem)
  if detector_name is not None:
    detector, config, input_shape = load_pretrained(detector_name)
    default_output = pathlib.Path(workdir or ".") / SCORES_FILE
  else:
    detector, config, input_shape = load_job_detector(workdir)
    default_output = pathlib.Path(workdir) / SCORES_FILE
  output = pathlib.Path(output) if output else default_output
  _check_output(output)
  batch_size = int(batch_size or detector.batch_size)
  if batch_size < 2:
    raise ScoreError(
      f"--batch-size must be >= 2 (the attention test needs 2 images), got {batch_size}"
    )
  x, paths = load_inputs(source, split, config, input_shape, resize)
  x = detector.preprocess(x)  # the detector's JPEG round trip, when it has one
  if detector.mmd_state_ is not None:
    batch_size = min(batch_size, detector.mmd_state_.n_reference)
  batch_size = min(batch_size, len(x))
  tick = time.perf_counter()
  columns = _columns(detector, x, batch_size, stream, progress, output, devices)
  if jax.process_index() != 0:
    return None
  seconds = time.perf_counter() - tick  # the tests and the flow (compilation included), not the I/O
  write_csv(output, columns, paths)
  return _summary(columns, output, seconds, stream, detector.level)


def _columns(detector, x, batch_size: int, stream: bool, progress: bool, output, devices):
  """The CSV's columns on process 0 (None elsewhere): the stream's, or every process's batches."""
  key = jax.random.PRNGKey(detector.seed)
  mesh = make_mesh(jax.local_devices() if devices is None else devices)
  if stream:
    if jax.process_index() != 0:
      return None
    return detector.score_stream(x, batch_size, key, mesh=mesh, preprocessed=True)
  columns = score_in_batches(
    detector,
    x,
    batch_size,
    key,
    mesh,
    progress=progress,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  return _gather_to_main(columns, output) if jax.process_count() > 1 else columns


def _summary(columns, output, seconds: float, stream: bool, level: float) -> Dict:
  n = len(columns["index"])
  summary = {
    "images": int(n),
    "images_flagged": int(columns["is_ood"].sum()),
    "output": str(output),
    "score_seconds": seconds,
    "images_per_s": n / seconds,
  }
  if not stream:
    flagged = columns["batch_p_value"] < level  # the batch tests, not the images' own p-values
    summary["batches"] = int(len(np.unique(columns["batch"])))
    summary["batches_flagged"] = int(len(np.unique(columns["batch"][flagged])))
  return summary


def summary_line(summary: Dict) -> str:
  """The one line `run.py --mode=score` prints: counts, time, rate and the CSV's path."""
  batches = (
    f"{summary['batches_flagged']} of {summary['batches']} batches flagged, "
    if "batches" in summary
    else ""
  )
  rate = summary["images_per_s"]
  return (
    f"{summary['images']} images, {batches}{summary['images_flagged']} images flagged as OOD; "
    f"scored in {summary['score_seconds']:.1f} s ({rate:.3g} images/s); "
    f"scores: {summary['output']}"
  )
