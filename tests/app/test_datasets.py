"""The job's data sets (`inflow_jax.app.datasets`): with attention.n_density, the conformal density
is fitted on training images that include the reference images."""

from configs import tiny
from inflow_jax.app.datasets import load_data, reference_images
from inflow_jax.gates.conformal import image_hashes


def test_n_density_fits_the_density_on_training_images_that_include_the_reference():
  config = tiny.get_config()
  config.attention.update(kind="conformal", n_reference=50, n_density=200)
  config.data.update(calibration_split="test[-100:]", test_split="test[:-100]")
  sets = load_data(config, "evaluate")
  reference = reference_images(sets["train"], 50, config.seed)
  assert sets["density"].shape == (200,) + sets["train"].shape[1:]
  assert image_hashes(reference) <= image_hashes(sets["density"]) <= image_hashes(sets["train"])
