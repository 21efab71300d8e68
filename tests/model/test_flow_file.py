"""The flow file (`inflow_jax.model.flow_file`): an .npz of the variables next to a .json of the
model's settings, read back as (InFlow, variables)."""

import json

import jax
import numpy as np
import pytest
from helpers import fast_jit

from inflow_jax.detector.files import model_config
from inflow_jax.model import InFlow
from inflow_jax.model.flow_file import load_flow_file


def test_load_flow_file(tmp_path):
  model = InFlow(num_blocks=1, width=4, glow=True, num_scales=2)
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 3))
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), x, 1.0)
  flat = {
    "/".join(k.key for k in path): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
  }
  np.savez(tmp_path / "flow.npz", **flat)
  (tmp_path / "flow.json").write_text(
    json.dumps({"model": {"num_blocks": 1, "width": 4, "glow": True, "num_scales": 2}})
  )
  loaded_model, loaded = load_flow_file(tmp_path / "flow.npz")
  assert model_config(loaded_model) == model_config(model)
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(
    jax.device_get(variables)
  )
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)
  (tmp_path / "other.npz").write_bytes((tmp_path / "flow.npz").read_bytes())
  with pytest.raises(ValueError, match="is not a flow file"):
    load_flow_file(tmp_path / "other.npz")
