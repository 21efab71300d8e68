"""The evaluators: small units that each add one protocol's or baseline's entries to the table.

Each is `evaluator(context, table, figures)`: it reads the scores in `context` (every set through
the detector once, `inflow_jax.evaluation.protocols.evaluation_context`) and writes its rows into
`table` (per OOD set under table["ood"][name]) and the per-image scores its figures plot into
`figures` ({score name: {set name ('in' for the in-distribution set): scores}}).

* paper:  in-distribution images scored with a = 1 forced (the original evaluation), OOD batches
          with their tested a: AUROC, AUPR, FPR95 (`metrics.ood_metrics`).
* strict: both sides with the a their own test gives, so false alarms count.
* baselines: the flow's NLL at a = 1 ('likelihood'), the paper score at a = 1 ('paper_score_a1'),
          NLL - PNG bits/dim ('input_complexity', Serra et al. 2020) and the typicality test's
          flagged batches (Nalisnick et al. 2019).
* image:  (a conformal gate) per-image conformal scores and the fraction of images with p < level.
* anchors: (a trained encoder) OpenOOD's post-hoc baselines on it (`inflow_jax.evaluation.anchors`).
* mixed:  OOD images mixed into in-distribution batches (`inflow_jax.evaluation.mixed`).
"""

from typing import Callable, Dict

import jax
import numpy as np

from inflow_jax.evaluation import baselines as baselines_lib
from inflow_jax.evaluation.metrics import ood_metrics
from inflow_jax.evaluation.mixed import mixed_protocol, typicality_flags

MIXED_STREAM = 10_000  # fold_in(key, 10_000): the mixed protocol


def paper(context, table: Dict, figures: Dict) -> None:
  in_scores = context.in_scores.at_one["paper"]
  figures["paper"] = {"in": in_scores}
  for name, scores in context.out_scores.items():
    table["ood"][name]["paper"] = ood_metrics(in_scores, scores.tested)
    figures["paper"][name] = scores.tested


def strict(context, table: Dict, figures: Dict) -> None:
  figures["strict"] = {"in": context.in_scores.tested}
  for name, scores in context.out_scores.items():
    table["ood"][name]["strict"] = ood_metrics(context.in_scores.tested, scores.tested)
    figures["strict"][name] = scores.tested


def baselines(context, table: Dict, figures: Dict) -> None:
  in_scores, typicality = context.in_scores, context.typicality
  table["in_distribution"]["typicality_batches_flagged"] = int(
    typicality_flags(typicality, in_scores.at_one["nll"], in_scores.tests.starts).sum()
  )
  nll_in = in_scores.at_one["nll"]
  png_in = baselines_lib.png_bits_per_dim(context.x_in)
  figures["likelihood"] = {"in": nll_in}
  figures["input_complexity"] = {"in": nll_in - png_in}
  for name, x_out in context.ood_sets.items():
    out_scores = context.out_scores[name]
    nll_out = out_scores.at_one["nll"]
    png_out = baselines_lib.png_bits_per_dim(x_out)
    table["ood"][name].update(
      likelihood=ood_metrics(nll_in, nll_out),
      paper_score_a1=ood_metrics(in_scores.at_one["paper"], out_scores.at_one["paper"]),
      input_complexity=ood_metrics(nll_in - png_in, nll_out - png_out),
      typicality_batches_flagged=int(
        typicality_flags(typicality, nll_out, out_scores.tests.starts).sum()
      ),
    )
    figures["likelihood"][name] = nll_out
    figures["input_complexity"][name] = nll_out - png_out


def image(context, table: Dict, figures: Dict) -> None:
  level = context.detector.level
  scores_in, p_in = context.image["in"]
  table["in_distribution"]["image_false_alarm"] = float(np.mean(p_in < level))
  figures["image_score"] = {"in": scores_in}
  for name in context.ood_sets:
    scores_out, p_out = context.image[name]
    table["ood"][name]["image_score"] = ood_metrics(scores_in, scores_out)
    table["ood"][name]["image_flagged"] = float(np.mean(p_out < level))
    figures["image_score"][name] = scores_out


def anchors(context, table: Dict, figures: Dict) -> None:
  scores_in = context.anchors["in"]
  for name in context.ood_sets:
    for baseline, scores_out in context.anchors[name].items():
      table["ood"][name][baseline] = ood_metrics(scores_in[baseline], scores_out)


def mixed(context, table: Dict, figures: Dict) -> None:
  settings = context.settings
  p_of = lambda name: None if context.image is None else context.image[name][1]
  table["mixed"] = mixed_protocol(
    context.detector,
    context.typicality,
    context.x_in,
    context.in_scores.at_one["nll"],
    p_of("in"),
    context.ood_sets,
    {name: s.at_one["nll"] for name, s in context.out_scores.items()},
    {name: p_of(name) for name in context.ood_sets},
    settings.mixed_rhos,
    settings.mixed_batch_sizes,
    settings.mixed_n_batches,
    jax.random.fold_in(context.key, MIXED_STREAM),
    settings.seed,
  )


EVALUATORS: Dict[str, Callable] = {
  "paper": paper,
  "strict": strict,
  "baselines": baselines,
  "image": image,
  "anchors": anchors,
  "mixed": mixed,
}
