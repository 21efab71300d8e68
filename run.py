"""Flags only: `python run.py --config configs/X.py --workdir DIR [--mode=train|evaluate|all]`.

The job itself is `inflow_jax.job.run_job` (see its docstring); any config value can be overridden
with `--config.GROUP.KEY=VALUE`.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from inflow_jax import job

_CONFIG = config_flags.DEFINE_config_file("config", None, "the job's config file (configs/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory of checkpoints, metrics and the report")
_MODE = flags.DEFINE_enum("mode", "all", job.MODES, "train, evaluate, or all (train then evaluate)")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax logs every save at INFO
  job.initialize_distributed(config)
  job.run_job(config, _WORKDIR.value, _MODE.value)


if __name__ == "__main__":
  app.run(main)
