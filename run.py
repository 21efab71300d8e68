"""InFlow: train a flow, fit its OOD detector and evaluate it, or score new images with it.

Modes (--mode):
  all       train (or resume) the flow of --config in --workdir, then evaluate (the default)
  train     train or resume only
  evaluate  fit the detector on the newest checkpoint (or a pretrained flow), write the report
            and save the detector to WORKDIR/detector/
  score     score new images (--input) with the detector a job saved in --workdir, or with a
            pretrained one (--detector cifar10: no training needed); writes a CSV

  python run.py --config configs/digits.py --workdir DIR [--mode=train|evaluate|all]
  python run.py --mode=score --workdir DIR --input folder:PATH [--output FILE] [--batch-size M]
      [--stream] [--resize]
  python run.py --mode=score --detector cifar10 --input folder:PATH [--output FILE]

Any config value can be set with --config.GROUP.KEY=VALUE. Mistakes are one line on stderr (exit 2;
1 for a failure while running); --debug (or INFLOW_DEBUG=1) shows the traceback.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from inflow_jax.app import cli

MODES = ("train", "evaluate", "all")
_CONFIG = config_flags.DEFINE_config_file("config", None, "the job's config file (configs/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory of checkpoints, metrics and the report")
_MODE = flags.DEFINE_enum("mode", "all", MODES + ("score",), "all, train, evaluate or score")
_FORCE_RESUME = flags.DEFINE_bool("force_resume", False, "resume despite changed training settings")
flags.DEFINE_bool("debug", False, "show tracebacks instead of one-line errors")
# --mode=score (inflow_jax.app.score.run_score)
_INPUT = flags.DEFINE_string(
  "input", None, "images: folder:PATH, npz:PATH, npy:PATH or a tfds name"
)
_OUTPUT = flags.DEFINE_string("output", None, "the CSV (default WORKDIR/scores.csv)")
_DETECTOR = flags.DEFINE_string(
  "detector", None, "score with a pretrained detector (inflow_jax.pretrained), e.g. cifar10"
)
_SPLIT = flags.DEFINE_string("split", "test", "the split of --input")
_BATCH_SIZE = flags.DEFINE_integer(
  "batch-size", None, "images per tested batch (default: detector's)"
)
_STREAM = flags.DEFINE_bool("stream", False, "gate each image by a window of the last batch-size")
_RESIZE = flags.DEFINE_bool(
  "resize", False, "resize inputs of another size than the training images"
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "jax.distributed: host:port")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "jax.distributed: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "jax.distributed: this process's index")


def score() -> None:
  if _CONFIG.value is not None:
    cli.fail("--mode=score takes no --config: the workdir holds the job's config")
  if _WORKDIR.value is None and _DETECTOR.value is None:
    cli.fail(
      "--mode=score needs --workdir (a job's) or --detector (a pretrained one, e.g. cifar10)"
    )
  if _INPUT.value is None:
    cli.fail("--mode=score needs --input (folder:PATH, npz:PATH, npy:PATH or a tfds name)")
  if _BATCH_SIZE.value is not None and _BATCH_SIZE.value < 2:
    cli.fail(
      f"--batch-size must be >= 2 (the attention test needs 2 images), got {_BATCH_SIZE.value}"
    )
  problem = cli.score_input_problem(_INPUT.value, _WORKDIR.value, _DETECTOR.value)
  if problem:  # before JAX loads: these answer within a second
    cli.fail(problem)
  from inflow_jax.app import score as score_mode  # noqa: PLC0415  (heavy: JAX)

  if _NUM_PROCESSES.value:
    import jax  # noqa: PLC0415

    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  summary = score_mode.run_score(
    _WORKDIR.value,
    _INPUT.value,
    output=_OUTPUT.value,
    split=_SPLIT.value,
    batch_size=_BATCH_SIZE.value,
    stream=_STREAM.value,
    resize=_RESIZE.value,
    detector_name=_DETECTOR.value,
  )
  if summary is not None:
    print(score_mode.summary_line(summary))


def main(argv) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _MODE.value == "score":
    return score()
  if _WORKDIR.value is None:
    cli.fail("--workdir is required")
  if _CONFIG.value is None:
    cli.fail("--config is required (except with --mode=score)")
  from inflow_jax.app import job  # noqa: PLC0415  (heavy: JAX)

  job.initialize_distributed(_CONFIG.value)
  job.run_job(_CONFIG.value, _WORKDIR.value, _MODE.value, force_resume=_FORCE_RESUME.value)


if __name__ == "__main__":
  if {"--help", "-h", "--helpshort", "-?"} & set(sys.argv[1:]):
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
  app.run(
    lambda argv: cli.run_guarded(main, argv),
    flags_parser=lambda argv: cli.parse_flags(argv, flags.FLAGS),
  )
