"""Training: the jitted data-parallel optimiser step, the flow's loop, orbax checkpoints.

step.py        optimiser (PyTorch's Adam with coupled L2), mesh, TrainState, the step, batch order
optimizer.py   Adam with coupled L2, warm-up/cosine schedules, clipping, EMA of the parameters
losses.py      the flow's losses (paper, per_dim, dequantized bits/dim), held-out bits/dim
flow.py        the checkpointed training loop, resume, evaluation while training
metrics.py     the metrics log (`metrics.jsonl`): its lines, reading it back, truncating on resume
state.py       initial / abstract / restored training states, `load_flow`
checkpoint.py  orbax checkpoints: periodic, the last N kept, atomic, checked on restore
"""

from inflow_jax.training.flow import TrainResult, train, train_on_batches
from inflow_jax.training.losses import flow_loss
from inflow_jax.training.optimizer import make_optimizer
from inflow_jax.training.state import load_flow, restore_variables
from inflow_jax.training.step import host_copy, local_batches
