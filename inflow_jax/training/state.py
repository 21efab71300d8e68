"""Training states: the initial one, its abstract form (shapes and shardings, to restore into), the
newest checkpoint's variables, and `load_flow`: a trained flow back from a job's workdir.

With `train.ema_decay` the variables used for evaluation (`eval_variables`) are the EMA parameters
held in the optimiser state (`inflow_jax.training.optimizer`), the raw ones otherwise.
"""

import functools
import pathlib
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inflow_jax.model import InFlow, torch_checkpoint
from inflow_jax.training import checkpoint as checkpoint_lib
from inflow_jax.training.optimizer import ema_params, make_optimizer
from inflow_jax.training.step import TrainState, make_mesh, replicate, split_variables
from inflow_jax.utils import stored_config

CHECKPOINT_DIR = "checkpoints"


@functools.lru_cache(maxsize=32)
def _jitted_init(model) -> Callable:
  return jax.jit(model.init)


def init_variables(model, seed: int, sample) -> Any:
  """`model.init(PRNGKey(seed), sample, attention=1)`, jitted once per model (the PRNG's compile
  dominates; eager init dispatches hundreds of small programs). Same values on every process."""
  return _jitted_init(model)(jax.random.PRNGKey(seed), np.asarray(sample, np.float32), 1.0)


def initial_train_state(model, config, sample: np.ndarray, mesh) -> tuple:
  """(TrainState at step 0, constants) from `init_variables(model, config.seed, sample)`,
  replicated.

  Every process computes the same initial values (same seed, same sample, deterministic init).
  """
  params, constants = split_variables(init_variables(model, config.seed, sample))
  state = TrainState(np.zeros((), np.int32), params, make_optimizer(config.train).init(params))
  return replicate(state, mesh), replicate(constants, mesh)


def abstract_train_state(model, config, sample: np.ndarray, mesh) -> tuple:
  """(abstract TrainState, abstract constants): shapes, dtypes and replicated shardings."""
  optimizer = make_optimizer(config.train)

  def initial(key, sample):
    params, constants = split_variables(model.init(key, sample, 1.0))
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params)), constants

  replicated = NamedSharding(mesh, P())
  shapes = jax.eval_shape(initial, jax.random.PRNGKey(config.seed), np.asarray(sample, np.float32))
  return jax.tree_util.tree_map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes
  )


def restore_variables(
  model, config, workdir, sample: np.ndarray, *, devices: Optional[Sequence[jax.Device]] = None
):
  """The model variables of the newest checkpoint in `<workdir>/checkpoints` (for evaluation).

  Raises:
    FileNotFoundError: no checkpoint there; checkpoint.CheckpointError: unreadable/mismatched.
  """
  mesh = make_mesh(devices)
  abstract_state, abstract_constants = abstract_train_state(model, config, sample, mesh)
  directory = pathlib.Path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    raise FileNotFoundError(
      f"no training checkpoint in {directory}; run with --mode=train (or all) first"
    )
  manager = checkpoint_lib.make_manager(directory, keep=config.train.keep_checkpoints, every=1)
  state, step = checkpoint_lib.restore_latest(manager, abstract_state)
  manager.close()
  if state is None:
    raise FileNotFoundError(
      f"no training checkpoint in {directory}; run with --mode=train (or all) first"
    )
  if jax.tree_util.tree_leaves(abstract_constants):
    _, abstract_constants = initial_train_state(model, config, sample, mesh)
  return eval_variables(state, abstract_constants), step


def eval_variables(state: TrainState, constants) -> dict:
  """The variables the evaluation uses: the EMA parameters when the optimiser keeps them."""
  ema = ema_params(state.opt_state)
  return {"params": state.params if ema is None else ema, **constants}


def load_flow(workdir, *, devices: Optional[Sequence[jax.Device]] = None):
  """(model, variables) of a job's workdir: the model rebuilt from its stored `config.json`, the
  variables of its newest checkpoint (EMA parameters when trained with them), or of the pretrained
  checkpoint the config names. `model.apply(variables, x, 1.0)` -> (z, log_det), x NHWC in [0, 1].
  """
  stored = stored_config.read_config(workdir)
  if stored is None:
    raise FileNotFoundError(
      f"{workdir} holds no config.json: it is not a job's workdir (or the job "
      "stopped before its first checkpoint)"
    )
  config = ml_collections.ConfigDict(
    {k: stored_config.tuples_from_json(v) for k, v in stored.items()}
  )
  model_settings = {k: stored_config.tuples_from_json(v) for k, v in stored["model"].items()}
  if config.checkpoint_path is not None:
    return torch_checkpoint.load_reference_checkpoint(
      config.checkpoint_path, model_settings["paper_compat"]
    )
  model = InFlow(**model_settings)
  size = stored["data"]["image_size"]
  sample = np.zeros((1, size, size, 3), np.float32)
  variables, _ = restore_variables(model, config, workdir, sample, devices=devices)
  return model, jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), variables)
