"""Import of the original PyTorch checkpoint: parity with the original's outputs, key/shape errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import fast_jit, shared_file

from inflow_jax.model import InFlow
from inflow_jax.model.torch_checkpoint import (
  load_reference_checkpoint,
  permutations_from_state_dict,
  state_dict_to_variables,
  variables_to_state_dict,
)

CHECKPOINT = "fixtures/inflow_cifar10_epoch150_torch_state.npz"


@functools.cache
def small_state_dict():
  """A width-8 model's weights in the original layout (no fixture needed)."""
  model = InFlow(width=8)
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)), 1.0)
  return variables_to_state_dict(variables, permutations=((2, 1, 0), (0, 2, 1))), variables


def test_parity_with_the_original_flow():
  model, variables = load_reference_checkpoint(shared_file(CHECKPOINT), paper_compat=True)
  exact_model, _ = load_reference_checkpoint(shared_file(CHECKPOINT), paper_compat=False)
  reference = np.load(shared_file("fixtures/inflow_reference_outputs_public.npz"))
  x = reference["x_nchw"].transpose(0, 2, 3, 1)
  forward = fast_jit(lambda a: (model.apply(variables, x, a), exact_model.apply(variables, x, a)))
  for a in (1, 0):
    (z, log_det), (z_exact, log_det_exact) = forward(jnp.float32(a))
    np.testing.assert_allclose(
      z, reference[f"z_alpha{a}_nchw"].transpose(0, 2, 3, 1), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(log_det, reference[f"logdet_alpha{a}"], rtol=1e-4)
    np.testing.assert_array_equal(z_exact, z)
    np.testing.assert_allclose(log_det_exact, a * log_det, rtol=1e-6)


def test_fixture_permutations_are_the_seeded_defaults():
  state = dict(np.load(shared_file(CHECKPOINT)))
  assert permutations_from_state_dict(state) == tuple(tuple(state[f"perm_{k}"]) for k in range(2))
  del state["perm_0"], state["perm_1"]
  assert permutations_from_state_dict(state) == ((2, 1, 0), (0, 2, 1))


def test_training_trajectory_checkpoints_load():
  for name in ("train_trajectory_public_init", "train_trajectory_public_final"):
    model, variables = load_reference_checkpoint(shared_file(f"fixtures/{name}.npz"))
    assert (
      model.width == 256 and model.num_blocks == 2 and model.permutations == ((2, 1, 0), (0, 2, 1))
    )
    state = dict(np.load(shared_file(f"fixtures/{name}.npz")))
    back = variables_to_state_dict(variables, model.permutations)
    assert sorted(back) == sorted(state)
    for key in state:
      np.testing.assert_array_equal(back[key], state[key], err_msg=key)


def test_conversion_round_trip_and_kernel_layout():
  state, variables = small_state_dict()
  converted = state_dict_to_variables(state)
  jax.tree_util.tree_map(np.testing.assert_array_equal, converted, variables)
  # OIHW -> HWIO: weight[o, i, dy, dx] == kernel[dy, dx, i, o]
  kernel = converted["params"]["coupling_1"]["subnet_t2"]["kernel_0"]
  weight = state["module_list.2.subnet_t2.0.weight"]
  assert kernel[2, 0, 4, 7] == weight[7, 4, 2, 0]


def test_mismatched_state_dicts_name_the_keys():
  state, _ = small_state_dict()
  missing = {k: v for k, v in state.items() if k != "module_list.2.subnet_s1.0.bias"}
  with pytest.raises(ValueError, match=r"missing keys.*module_list\.2\.subnet_s1\.0\.bias"):
    state_dict_to_variables(missing)
  with pytest.raises(ValueError, match=r"unexpected keys.*module_list\.0\.actnorm\.scale"):
    state_dict_to_variables({**state, "module_list.0.actnorm.scale": np.ones(3)})
  shaped = {**state, "module_list.0.subnet_t1.2.weight": np.ones((2, 8, 5, 5), np.float32)}
  with pytest.raises(ValueError, match=r"mis-shaped.*module_list\.0\.subnet_t1\.2\.weight"):
    state_dict_to_variables(shaped)
  with pytest.raises(ValueError, match="no coupling weights"):
    state_dict_to_variables({"foo": np.ones(3)})
  with pytest.raises(ValueError, match="not a permutation"):
    permutations_from_state_dict({**state, "perm_1": np.array([0, 0, 1])})


def test_unreadable_files_raise_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_reference_checkpoint(tmp_path / "absent.npz")
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
  with pytest.raises(ValueError, match="could not read"):
    load_reference_checkpoint(corrupt)
  with pytest.raises(ValueError, match="unknown format"):
    load_reference_checkpoint(corrupt.rename(tmp_path / "weights.h5"))


def test_torch_checkpoint_loads_with_weights_only(tmp_path):
  torch = pytest.importorskip("torch")
  state, variables = small_state_dict()
  path = tmp_path / "10.pt"
  weights = {
    k: torch.from_numpy(np.ascontiguousarray(v))
    for k, v in state.items()
    if not k.startswith("perm_")
  }
  torch.save({"net": {f"module.{k}": v for k, v in weights.items()}, "epoch": 10}, path)
  model, loaded = load_reference_checkpoint(path, paper_compat=False)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
  assert model.permutations == ((2, 1, 0), (0, 2, 1)) and not model.paper_compat
  corrupt = tmp_path / "corrupt.pt"
  corrupt.write_bytes(b"\x80\x04garbage")
  with pytest.raises(ValueError, match="could not read"):
    load_reference_checkpoint(corrupt)
