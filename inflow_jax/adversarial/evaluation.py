"""Adversarial sets, and how well InFlow (and the baselines) detect them.

Every set is float32 images in [0, 1] with ||x' - x||_inf <= epsilon (pixel units of [0, 1]):

* `{in_name}_pgd{k}`: in-distribution test images perturbed by untargeted PGD against the classifier
  (maximising its cross-entropy) at epsilon = k/255: the classic "adversarial OOD" set.
* `{ood}_adaptive_llh`: OOD images perturbed by PGD to RAISE the flow log-likelihood at a = 1
  (`LowerScore` of the 'nll' score): an attacker who knows the flow.
* `{ood}_adaptive_mmd`: OOD images perturbed to LOWER the attention test's MMD^2, batch by batch over
  exactly the batches the evaluation tests (`batching.batch_starts`): an attacker who knows the test.
* `{ood}_adaptive_conformal`: OOD images perturbed to LOWER the conformal attention's per-image score
  (`LowerImageScore`, white-box through the flow and the density; the PNG length held fixed during
  the ascent): an attacker who knows the new gate.
* `{ood}_adaptive_conformal_surrogate`: the same with the PNG lengths replaced during the ascent by a
  differentiable surrogate fitted to them (`complexity_surrogate`): the attack also keeps the image
  compressible.

Every attack keeps PGD's best iterate (`attacks.pgd`) and, when the data go through a JPEG round
trip (`data.jpeg_quality`), attacks through it (`preprocessing.ThroughJPEG`, BPDA) and hands the
detector the round trip of its result: the attacker's images take the pipeline every other set took.

`evaluate_adversarial` scores these sets as OOD sets with `inflow_jax.evaluation.protocols.evaluate_ood`
(paper and strict protocols, the baselines, and the mixed protocol when the config asks for it) and
adds the classifier's accuracy under attack and the adaptive attacks' effect on their own
objectives (before/after).
"""

import functools
from typing import Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inflow_jax import gates as conformal
from inflow_jax.adversarial import classifier as classifier_lib
from inflow_jax.adversarial.attacks import fgsm, pgd
from inflow_jax.adversarial.complexity_surrogate import (
  fit_surrogate,
  surrogate_complexity_bits,
  surrogate_residual_rms,
)
from inflow_jax.adversarial.names import eps_name
from inflow_jax.adversarial.objectives import (
  LowerImageScore,
  LowerImageScoreSurrogate,
  LowerMeanShift,
  LowerMMD,
  LowerScore,
)
from inflow_jax.adversarial.preprocessing import ThroughJPEG
from inflow_jax.adversarial.settings import (
  adaptive_steps,
  check_attack_config,
  classifier_step_size,
)
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.evaluation.protocols import ood_table
from inflow_jax.gates.conformal import scores_of_features
from inflow_jax.gates.features import complexity_bits, image_features
from inflow_jax.gates.mean_shift import batch_statistic
from inflow_jax.gates.mmd_batches import attention_tests
from inflow_jax.model.density import exact_log_det, make_score_fn
from inflow_jax.utils.batching import batch_starts, batched


def attack_classifier(
  model: classifier_lib.Classifier, variables, x, y, attack_config, key, *, name: str = "in"
) -> Tuple[Dict[str, np.ndarray], Dict]:
  """PGD (and, for the accuracy table, FGSM) against the classifier at every `attack_config.epsilons`.

  Returns:
    ({f"{name}_pgd{k}": (N, H, W, C) float32}, accuracy table {"clean": a, "fgsm": {k: a},
    "pgd": {k: a}, "n_images": N}), k = epsilon * 255 as text.
  """
  y = np.asarray(y)
  loss = classifier_lib.ClassifierLoss(model)
  batch = int(attack_config.batch_size)
  sets, table = (
    {},
    {
      "n_images": int(len(x)),
      "fgsm": {},
      "pgd": {},
      "clean": classifier_lib.accuracy(model, variables, x, y),
    },
  )
  for e, epsilon in enumerate(attack_config.epsilons):
    k = eps_name(epsilon)
    x_pgd = batched(
      lambda i, xb, yb: pgd(
        loss,
        xb,
        epsilon,
        step_size=classifier_step_size(attack_config, epsilon),
        num_steps=attack_config.num_steps,
        random_start=attack_config.random_start,
        key=jax.random.fold_in(jax.random.fold_in(key, e), i),
        loss_args=(variables, yb),
      ),
      (x, y),
      batch,
      with_index=True,
    )
    x_fgsm = batched(
      lambda xb, yb: fgsm(loss, xb, epsilon, loss_args=(variables, yb)), (x, y), batch
    )
    table["pgd"][k] = classifier_lib.accuracy(model, variables, x_pgd, y)
    table["fgsm"][k] = classifier_lib.accuracy(model, variables, x_fgsm, y)
    sets[f"{name}_pgd{k}"] = x_pgd
  return sets, table


def attack_detector(
  model,
  variables,
  mmd_state,
  ood_sets: Mapping[str, np.ndarray],
  attack_config,
  batch_size: int,
  key,
  conformal_state=None,
  jpeg_quality: Optional[int] = None,
) -> Tuple[Dict[str, np.ndarray], Dict]:
  """The adaptive attacks of `attack_config.adaptive_targets` on each OOD set, at `adaptive_epsilon`.

  With `jpeg_quality` the detector puts its inputs through that JPEG round trip g: every objective
  is taken at g(x) with the straight-through derivative (`preprocessing.ThroughJPEG`) and the
  returned images are g(x_adv), what the detector scores.

  Args:
    model, variables: the InFlow flow.
    mmd_state: the fitted attention test.
    ood_sets: {name: (N, H, W, C) float32 in [0, 1]}.
    attack_config: `adaptive_num_steps`, `adaptive_step_size` (`adaptive_steps`), `random_start`,
      `adaptive_epsilon`, `adaptive_targets`.
    batch_size: the evaluation's test batch size (the MMD attack perturbs exactly these batches).
    key: PRNG key of the random starts and of the before/after attention tests.
    conformal_state: the conformal attention (`inflow_jax.gates`), needed by the 'conformal'
      target; with it the summary also gives the fraction of images its per-image test flags.
  Returns:
    ({f"{name}_adaptive_{llh|mmd|conformal|conformal_surrogate}": images}, summary {set: {"nll_bpd": [before, after]
    (mean NLL bits/dim at a = 1; lower = more likely), "mmd2": [before, after] (mean over test
    batches), "batches_flagged": [before, after], "n_batches": n; with conformal_state also
    "image_score" (mean per-image score) and "images_flagged" (fraction with p < level): [before, after];
    with its mean-shift test "mean_shift_flagged" (test batches it flags) and "mean_shift_statistic"
    (their mean T, the 'mean_shift' attack's objective): [before, after];
    for the 'conformal' targets "surrogate_score": [before, after] of the objective the attack lowers
    (the score with the clean images' PNG lengths, or with the surrogate's), for 'conformal_surrogate'
    also "surrogate_rms" (2,): the surrogate's error on the attacked images (bits/dim)}}).
  """
  check_attack_config(attack_config, tuple(ood_sets))
  targets = tuple(attack_config.adaptive_targets)
  if {"conformal", "conformal_surrogate"} & set(targets) and conformal_state is None:
    raise ValueError(
      "the 'conformal' adaptive targets need the conformal attention (attention.kind "
      "'conformal' or 'combined')"
    )
  if "mean_shift" in targets and (conformal_state is None or conformal_state.mean_shift is None):
    raise ValueError(
      "the 'mean_shift' adaptive target needs the combined gate's mean-shift test "
      "(attention.kind 'combined', attention.mean_shift_components set)"
    )
  nll_fn = make_score_fn(model, variables, "nll")
  batch_memory = int(attack_config.batch_size)

  def describe(x, test_key):
    """(the summary's entries for x, x's conformal features or None)."""
    tests = attention_tests(mmd_state, x, batch_size, test_key)
    nll = batched(lambda xb: nll_fn(xb, 1.0), x, batch_memory)
    described = {
      "nll_bpd": float(nll.mean()),
      "mmd2": float(tests.mmd2.mean()),
      "batches_flagged": int(tests.flagged.sum()),
      "n_batches": int(tests.flagged.size),
    }
    if conformal_state is None:
      return described, None
    shift = conformal_state.mean_shift
    if shift is not None:
      described["mean_shift_flagged"] = int(
        np.sum(
          conformal.mean_shift_p_values(shift, x, tests.starts, test_key) < conformal_state.level
        )
      )
      described["mean_shift_statistic"] = float(
        np.mean(
          [batch_statistic(shift, x[lo:hi]) for lo, hi in zip(tests.starts[:-1], tests.starts[1:])]
        )
      )
    features = image_features(model, variables, x)
    scores = scores_of_features(conformal_state.density, features)
    described["image_score"] = float(np.mean(scores))
    described["images_flagged"] = float(
      np.mean(conformal.image_p_values(conformal_state, scores) < conformal_state.level)
    )
    return described, features

  attack = functools.partial(
    _adaptive_images,
    model=model,
    variables=variables,
    mmd_state=mmd_state,
    conformal_state=conformal_state,
    nll_fn=nll_fn,
    batch_size=batch_size,
    attack_config=attack_config,
    jpeg_quality=jpeg_quality,
  )
  sets, summary = {}, {}
  for s, (name, x) in enumerate(ood_sets.items()):
    set_key = jax.random.fold_in(key, s)
    test_key = jax.random.fold_in(set_key, 99)  # the same tests before and after
    before, features = describe(x, test_key)
    for t, target in enumerate(targets):
      coefficients = (
        None
        if target != "conformal_surrogate"
        else fit_surrogate(x, jax.random.fold_in(set_key, 100 + t), attack_config.adaptive_epsilon)
      )
      x_adv = attack(target, x, jax.random.fold_in(set_key, t), coefficients=coefficients)
      adv_name = f"{name}_adaptive_{_TARGET_SUFFIX[target]}"
      after, features_adv = describe(x_adv, test_key)
      sets[adv_name] = x_adv
      summary[adv_name] = {
        "target": target,
        "epsilon": float(attack_config.adaptive_epsilon),
        "n_batches": before["n_batches"],
        **{k: [before[k], after[k]] for k in before if k != "n_batches"},
        **_objective_summary(
          target, conformal_state, coefficients, (x, features), (x_adv, features_adv)
        ),
      }
  return sets, summary


def _objective_summary(target: str, conformal_state, coefficients, clean, attacked) -> Dict:
  """For the 'conformal' targets, "surrogate_score": [before, after] of the objective the attack
  lowers (the score with the clean images' PNG lengths, or with the surrogate's) and, for
  'conformal_surrogate', "surrogate_rms"; clean and attacked are (images, conformal features)."""
  (x, features), (x_adv, features_adv) = clean, attacked
  objective = functools.partial(_score_with_complexity, conformal_state)
  if target == "conformal":  # BPDA: the clean images' PNG lengths
    return {
      "surrogate_score": [
        objective(features, features[:, -2:]),
        objective(features_adv, features[:, -2:]),
      ]
    }
  if target == "conformal_surrogate":
    return {
      "surrogate_score": [
        objective(f, surrogate_complexity_bits(coefficients, xs))
        for f, xs in ((features, x), (features_adv, x_adv))
      ],
      "surrogate_rms": surrogate_residual_rms(coefficients, x_adv, features_adv[:, -2:]).tolist(),
    }
  return {}


def _score_with_complexity(conformal_state, features: np.ndarray, complexity) -> float:
  """The mean per-image score of images with these conformal features, their (N, 2) PNG bits/dim
  replaced by `complexity`: the objective a 'conformal' attack lowers (the true score has the
  images' own lengths)."""
  features = features.copy()
  features[:, -2:] = np.asarray(complexity)
  return float(np.mean(scores_of_features(conformal_state.density, features)))


_TARGET_SUFFIX = {
  "log_likelihood": "llh",
  "mmd": "mmd",
  "conformal": "conformal",
  "conformal_surrogate": "conformal_surrogate",
  "mean_shift": "mean_shift",
}


def _adaptive_images(
  target: str,
  x: np.ndarray,
  key,
  *,
  model,
  variables,
  mmd_state,
  conformal_state,
  nll_fn,
  batch_size: int,
  attack_config,
  coefficients=None,
  jpeg_quality: Optional[int] = None,
) -> np.ndarray:
  """x perturbed by PGD against one target: the likelihood and the conformal score per image (in
  chunks of attack_config.batch_size), the MMD test per evaluation batch; with `jpeg_quality`
  through that round trip (objectives at g(x), the result g(x_adv))."""
  epsilon = float(attack_config.adaptive_epsilon)
  num_steps, step_size = adaptive_steps(attack_config)
  through = (
    (lambda objective: objective)
    if jpeg_quality is None
    else (lambda objective: ThroughJPEG(objective, int(jpeg_quality)))
  )
  run = lambda objective, xb, i, args=(): pgd(
    through(objective),
    xb,
    epsilon,
    step_size=step_size,
    num_steps=num_steps,
    random_start=attack_config.random_start,
    key=jax.random.fold_in(key, i),
    loss_args=args,
  )
  x_adv = _attacked(
    target,
    x,
    run,
    model=model,
    variables=variables,
    mmd_state=mmd_state,
    conformal_state=conformal_state,
    nll_fn=nll_fn,
    batch_size=batch_size,
    attack_config=attack_config,
    coefficients=coefficients,
  )
  return x_adv if jpeg_quality is None else jpeg_round_trip(x_adv, int(jpeg_quality))


def _attacked(
  target: str,
  x: np.ndarray,
  run,
  *,
  model,
  variables,
  mmd_state,
  conformal_state,
  nll_fn,
  batch_size: int,
  attack_config,
  coefficients,
) -> np.ndarray:
  """`run(objective, chunk, index, loss_args)` over the chunks (or, for the batch statistics 'mmd' and
  'mean_shift', the test batches) of x."""
  if target == "log_likelihood":
    return batched(
      lambda i, xb: run(LowerScore(nll_fn), xb, i),
      x,
      int(attack_config.batch_size),
      with_index=True,
    )
  if target in ("conformal", "conformal_surrogate"):
    density = jax.tree.map(jnp.asarray, conformal_state.density)
    if target == "conformal":  # BPDA: the clean chunk's PNG lengths
      objective, complexity = LowerImageScore(exact_log_det(model)), complexity_bits
    else:  # the fitted surrogate's coefficients
      objective, complexity = LowerImageScoreSurrogate(exact_log_det(model)), lambda _: coefficients
    return batched(
      lambda i, xb: run(
        objective, xb, i, (variables, density, jnp.asarray(complexity(xb), jnp.float32))
      ),
      x,
      int(attack_config.batch_size),
      with_index=True,
    )
  objective, args = (
    (LowerMMD(), (mmd_state,))
    if target == "mmd"
    else (LowerMeanShift(), (conformal_state.mean_shift,))
  )
  starts = batch_starts(len(x), batch_size)
  return np.concatenate(
    [
      np.asarray(run(objective, x[lo:hi], i, args))
      for i, (lo, hi) in enumerate(zip(starts[:-1], starts[1:]))
    ]
  )


def _classifier_sets(
  adv, classifier, x_train, y_train, x_test, y_test, key, in_name: str, jpeg_quality: Optional[int]
) -> Tuple[Dict[str, np.ndarray], Dict]:
  """`attack_classifier` with the given classifier, or one trained on (x_train, y_train); the sets
  through the JPEG round trip when there is one (what the detector scores; the accuracies are of the
  classifier on the attacked images themselves)."""
  if classifier is None:
    if x_train is None or y_train is None:
      raise ValueError("evaluate_adversarial needs a trained classifier or (x_train, y_train)")
    classifier_model = classifier_lib.Classifier(**adv.model)
    classifier = (
      classifier_model,
      classifier_lib.train_classifier(classifier_model, x_train, y_train, adv).variables,
    )
  sets, table = attack_classifier(*classifier, x_test, y_test, adv.attack, key, name=in_name)
  if jpeg_quality is not None:
    sets = {name: jpeg_round_trip(x, jpeg_quality) for name, x in sets.items()}
  return sets, table


def evaluate_adversarial(
  config: ml_collections.ConfigDict,
  *,
  model,
  variables,
  mmd_state,
  x_test: np.ndarray,
  ood_sets: Mapping[str, np.ndarray],
  x_heldout: Optional[np.ndarray],
  key: jax.Array,
  classifier: Optional[Tuple[classifier_lib.Classifier, object]] = None,
  x_train: Optional[np.ndarray] = None,
  y_train: Optional[np.ndarray] = None,
  y_test: Optional[np.ndarray] = None,
  in_name: str = "in",
  include_clean: bool = False,
  conformal_state=None,
  combination: str = "bonferroni",
) -> Dict:
  """Builds the adversarial sets and scores them with `evaluate_ood` (paper, strict, baselines, and
  the mixed protocol when `config.eval.protocols` has it: the gates' power on attacked images at
  each batch size).

  Args:
    config: a run config with `adversarial` (`configs/digits_classifier.py`: `seed`, `model`, `train`,
      `attack`), `seed`, `eval.batch_size` and optionally `eval.baselines`, `eval.n_bootstrap`.
    model, variables, mmd_state: the InFlow flow and its fitted attention test.
    x_test: (N, H, W, C) in-distribution test images; the clean in-distribution side of every metric.
    ood_sets: the (clean) OOD sets the adaptive attacks start from; those named in
      `attack.adaptive_ood` (None: all) are attacked.
    x_heldout: held-out in-distribution images for the typicality baseline (needed when
      `config.eval.baselines`, default True).
    key: PRNG key of the attacks and tests.
    classifier: (Classifier, variables) already trained; else one is trained on (x_train, y_train) with
      `config.adversarial`. Without labels (y_test None) the classifier attack is skipped.
    in_name: prefix of the classifier-attack set names.
    include_clean: also score the clean attacked OOD sets (for a before/after detection table).
    conformal_state, combination: the conformal attention (the 'conformal' target attacks it; the
      detection table then has its per-image rows, as `evaluate_ood`).
  With `config.data.jpeg_quality` (the sets went through that round trip at loading) the attacked
  images go through it too before they are scored, and the adaptive attacks attack through it
  (`attack_detector`).
  Returns:
    `evaluate_ood`'s table over the adversarial sets, plus "classifier" (accuracy under attack, or None)
    and "adaptive" (before/after of each adaptive attack), JSON-serialisable.
  """
  adv = config.adversarial
  attack = adv.attack
  jpeg_quality = config.get("data", {}).get("jpeg_quality")
  check_attack_config(attack, tuple(ood_sets))
  if attack.max_images is not None:
    x_test = x_test[: attack.max_images]
    y_test = None if y_test is None else y_test[: attack.max_images]
  sets, classifier_table = {}, None
  if y_test is not None:
    sets, classifier_table = _classifier_sets(
      adv,
      classifier,
      x_train,
      y_train,
      x_test,
      y_test,
      jax.random.fold_in(key, 0),
      in_name,
      jpeg_quality,
    )
  names = attack.adaptive_ood or tuple(ood_sets)
  adaptive_sets, adaptive_table = attack_detector(
    model,
    variables,
    mmd_state,
    {n: ood_sets[n] for n in names},
    attack,
    config.eval.batch_size,
    jax.random.fold_in(key, 1),
    conformal_state,
    jpeg_quality=jpeg_quality,
  )
  if include_clean:
    sets.update({n: ood_sets[n] for n in names})
  sets.update(adaptive_sets)
  e = config.eval
  mixed = (
    {
      "mixed_rhos": tuple(e.mixed_rhos),
      "mixed_batch_sizes": tuple(e.mixed_batch_sizes),
      "mixed_n_batches": e.mixed_n_batches,
    }
    if "mixed" in tuple(e.get("protocols", ()))
    else {}
  )
  protocols = ("paper", "strict") + (("mixed",) if mixed else ())
  table, _ = ood_table(
    model,
    variables,
    mmd_state,
    x_test,
    sets,
    key=jax.random.fold_in(key, 2),
    batch_size=e.batch_size,
    protocols=protocols,
    baselines=e.baselines,
    x_heldout=x_heldout,
    n_bootstrap=e.n_bootstrap,
    seed=config.seed,
    conformal_state=conformal_state,
    combination=combination,
    **mixed,
  )
  table["classifier"] = classifier_table
  table["adaptive"] = adaptive_table
  return table
