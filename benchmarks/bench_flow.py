"""Throughput of the paper's InFlow (2 blocks, width 256, 32x32x3): training step and forward pass.

    python benchmarks/bench_flow.py --batch-size 250 --steps 5 --json [--torch]

train: one jitted step of Adam(lr 1e-4, betas (0.8, 0.99), eps 1e-8) with L2 weight decay 2e-5 added
to the gradient (the original's torch.optim.Adam) on the original loss
mean(0.5 * sum(z^2) - log_det) / 3 at attention 1. forward: jitted (z, log_det).
Warm-up (compilation) is excluded; every timing ends with block_until_ready. With --torch the same
architecture in PyTorch (benchmarks/torch_inflow.py, torch.set_num_threads(--threads)) is timed too.
The model (InFlow(**config.model)), optimiser and loss are the ones of configs/cifar10.py and
inflow_jax.training. The load average is printed with every result: on a shared machine the figures
are noisy.
"""

import argparse

import common
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs.cifar10 import get_config
from inflow_jax.model import InFlow
from inflow_jax.training.losses import flow_loss
from inflow_jax.training.optimizer import make_optimizer


def time_calls(fn, steps):
  """Median wall seconds of one fn() call, over `steps` calls after one warm-up call, each waited
  for (`common.call_times`: on CPU, un-awaited back-to-back calls overlap and fight over the same
  cores)."""
  return float(np.median([wall for wall, _ in common.call_times(lambda i: fn(), steps)]))


def bench_jax(batch_size, steps, seed=0):
  config = get_config()
  model = InFlow(**config.model)  # the paper architecture: 2 blocks, width 256
  x = jnp.asarray(np.random.default_rng(seed).uniform(size=(batch_size, 32, 32, 3)), jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), x[:1], 1.0)["params"]
  optimizer = make_optimizer(config.train)  # the original's Adam + coupled weight decay

  @jax.jit
  def train_step(params, opt_state, x):
    loss, grads = jax.value_and_grad(lambda p: flow_loss(model, {"params": p}, x))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  forward = jax.jit(lambda params, x: model.apply({"params": params}, x, 1.0))
  state = [params, optimizer.init(params)]

  def one_step():
    state[0], state[1], loss = train_step(state[0], state[1], x)
    return loss

  return {
    "train_s": time_calls(one_step, steps),
    "forward_s": time_calls(lambda: forward(params, x), steps),
  }


def bench_torch(batch_size, steps, threads, seed=0):
  import torch
  from torch_inflow import TorchInFlow  # benchmarks/, on sys.path as the script's directory

  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  model = TorchInFlow()
  x = torch.rand(batch_size, 3, 32, 32)
  optimizer = torch.optim.Adam(
    model.parameters(), lr=1e-4, betas=(0.8, 0.99), eps=1e-8, weight_decay=2e-5
  )

  def train_step():
    optimizer.zero_grad()
    z, log_det = model(x, 1.0)
    loss = (0.5 * torch.sum(z**2, (1, 2, 3)) - log_det).mean() / 3
    loss.backward()
    optimizer.step()

  def forward():
    with torch.no_grad():
      model(x, 1.0)

  return {"train_s": time_calls(train_step, steps), "forward_s": time_calls(forward, steps)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch-size", type=int, default=250)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--torch", action="store_true", help="also time the PyTorch implementation")
  parser.add_argument(
    "--torch-steps", type=int, default=None, help="steps for torch (default --steps)"
  )
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  args = parser.parse_args(argv)

  before = common.machine()
  result = {
    "batch_size": args.batch_size,
    "steps": args.steps,
    "load_average_before": before["load_avg"],
    "jax_version": jax.__version__,
    "device": before["device"],
  }
  jax_times = bench_jax(args.batch_size, args.steps)
  result["train_images_per_s"] = args.batch_size / jax_times["train_s"]
  result["forward_images_per_s"] = args.batch_size / jax_times["forward_s"]
  if args.torch:
    torch_times = bench_torch(args.batch_size, args.torch_steps or args.steps, args.threads)
    result["torch_threads"] = args.threads
    result["torch_train_images_per_s"] = args.batch_size / torch_times["train_s"]
    result["torch_forward_images_per_s"] = args.batch_size / torch_times["forward_s"]
    result["train_speedup"] = result["train_images_per_s"] / result["torch_train_images_per_s"]
    result["forward_speedup"] = (
      result["forward_images_per_s"] / result["torch_forward_images_per_s"]
    )
  result["load_average_after"] = common.machine()["load_avg"]
  common.emit(result, args.json)


if __name__ == "__main__":
  main()
