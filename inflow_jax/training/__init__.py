"""Training: the jitted data-parallel optimiser step, the flow's loop, orbax checkpoints.

  step.py        optimiser (PyTorch's Adam with coupled L2), mesh, TrainState, the step, batch order
  flow.py        the flow's loss, the checkpointed training loop, resume, restore for evaluation
  checkpoint.py  orbax checkpoints: periodic, the last N kept, atomic, checked on restore
"""
from inflow_jax.training.flow import (TrainResult, flow_loss, restore_variables, train,
                                      train_on_batches)
from inflow_jax.training.step import host_copy, local_batches, make_optimizer
