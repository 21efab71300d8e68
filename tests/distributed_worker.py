"""One process of the 2-process `jax.distributed` test (tests/test_run.py): trains the tiny config.

  python tests/distributed_worker.py PORT PROCESS_ID WORKDIR OUT.npz

Each process has 2 CPU devices (4 in all) and feeds its half of every batch; it saves every local
copy of the trained parameters and the losses to OUT.npz.
"""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)

import numpy as np  # noqa: E402

from configs import tiny  # noqa: E402
from inflow_jax.app import job  # noqa: E402
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
  model, _ = load_model(config)
  x_train = load_data(config, "train")["train"]
  result = train.train(model, x_train, config, workdir, progress=False)
  copies = {}
  for i, leaf in enumerate(jax.tree_util.tree_leaves(result.variables["params"])):
    for j, shard in enumerate(leaf.addressable_shards):
      copies[f"leaf{i}_device{j}"] = np.asarray(shard.data)
  np.savez(out, losses=result.losses, steps=result.steps, **copies)


if __name__ == "__main__":
  main(*sys.argv[1:])
