"""One process of the 2-process `jax.distributed` test (tests/test_run.py): trains the tiny config's
flow, then a tiny in-distribution encoder (`app.build.trained_encoder`, as the job's train mode).

  python tests/distributed_worker.py PORT PROCESS_ID WORKDIR OUT.npz

Each process has 2 CPU devices (4 in all) and feeds its half of every batch; it saves every local
copy of the trained parameters, the losses, and the encoder's variables and losses to OUT.npz.
"""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)

import numpy as np  # noqa: E402

from configs import tiny  # noqa: E402
from inflow_jax.app import build, job  # noqa: E402
from inflow_jax.app.build import load_model  # noqa: E402
from inflow_jax.app.datasets import load_data  # noqa: E402
from inflow_jax.training import flow as train  # noqa: E402


def main(port: str, process_id: str, workdir: str, out: str) -> None:
  config = tiny.get_config()
  config.train.update(
    distributed=True,
    coordinator_address=f"localhost:{port}",
    num_processes=2,
    process_id=int(process_id),
  )
  job.initialize_distributed(config)
  assert jax.process_count() == 2 and jax.device_count() == 4, (
    jax.process_count(),
    jax.device_count(),
  )
  config.encoder.update(enabled=True, rotation_fraction=0.25)
  config.encoder.model.update(stem_width=4, widths=(8,))
  config.encoder.train.update(
    num_steps=5, batch_size=16, warmup_steps=1, decay_steps=4, log_every=5, eval_every=0
  )
  model, _ = load_model(config)
  sets = load_data(config, "train")
  result = train.train(model, sets["train"], config, workdir, progress=False)
  copies = {}
  for i, leaf in enumerate(jax.tree_util.tree_leaves(result.variables["params"])):
    for j, shard in enumerate(leaf.addressable_shards):
      copies[f"leaf{i}_device{j}"] = np.asarray(shard.data)
  encoder, _ = build.trained_encoder(config, workdir, sets, progress=False)
  for i, leaf in enumerate(jax.tree_util.tree_leaves(encoder.variables)):
    copies[f"encoder{i}"] = np.asarray(leaf)
  np.savez(out, losses=result.losses, steps=result.steps, **copies)


if __name__ == "__main__":
  main(*sys.argv[1:])
