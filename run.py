"""Flags only. Train, evaluate, or score new images with a job's saved detector:

  python run.py --config configs/X.py --workdir DIR [--mode=train|evaluate|all] [--force_resume]
  python run.py --mode=score --workdir DIR --input SOURCE [--output FILE] [--split S]
      [--batch-size M] [--stream] [--resize]

The job is `inflow_jax.app.job.run_job`, the score mode `inflow_jax.app.score.run_score` (see their
docstrings); any config value can be overridden with `--config.GROUP.KEY=VALUE`.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from inflow_jax.app import job
from inflow_jax.app import score as score_job
from inflow_jax.app.config_checks import MODES

_CONFIG = config_flags.DEFINE_config_file("config", None, "the job's config file (configs/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory of checkpoints, metrics and the report")
_MODE = flags.DEFINE_enum(
  "mode",
  "all",
  MODES + ("score",),
  "train, evaluate, all (train then evaluate), or score (new images)",
)
_FORCE_RESUME = flags.DEFINE_bool("force_resume", False, "resume despite changed training settings")
# --mode=score (inflow_jax.app.score.run_score)
_INPUT = flags.DEFINE_string(
  "input", None, "images: npz:PATH, npy:PATH, folder:PATH or a tfds name"
)
_OUTPUT = flags.DEFINE_string("output", None, "the CSV (default DIR/scores.csv)")
_SPLIT = flags.DEFINE_string("split", "test", "the split of --input")
_BATCH_SIZE = flags.DEFINE_integer(
  "batch-size", None, "images per tested batch (default: detector's)"
)
_STREAM = flags.DEFINE_bool("stream", False, "gate each image by a window of the last batch-size")
_RESIZE = flags.DEFINE_bool(
  "resize", False, "resize inputs of another size than the training images"
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "jax.distributed: coordinator host:port"
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "jax.distributed: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "jax.distributed: this process's index")


def score(argv) -> None:
  if _CONFIG.value is not None:
    raise app.UsageError("--mode=score takes no --config: the workdir holds the job's config")
  if _INPUT.value is None:
    raise app.UsageError("--mode=score needs --input SOURCE")
  if _NUM_PROCESSES.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    summary = score_job.run_score(
      _WORKDIR.value,
      _INPUT.value,
      output=_OUTPUT.value,
      split=_SPLIT.value,
      batch_size=_BATCH_SIZE.value,
      stream=_STREAM.value,
      resize=_RESIZE.value,
    )
  except score_job.ScoreError as error:
    sys.exit(f"error: {error}")
  if summary is not None:
    batches = (
      f"{summary['batches_flagged']} of {summary['batches']} batches flagged, "
      if "batches" in summary
      else ""
    )
    print(
      f"{summary['images']} images, {batches}{summary['images_flagged']} images flagged as OOD; "
      f"scored in {summary['score_seconds']:.1f} s ({summary['images_per_s']:.0f} images/s); "
      f"scores: {summary['output']}"
    )


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _MODE.value == "score":
    return score(argv)
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required (except with --mode=score)")
  job.initialize_distributed(config)
  job.run_job(config, _WORKDIR.value, _MODE.value, force_resume=_FORCE_RESUME.value)


if __name__ == "__main__":
  app.run(main)
