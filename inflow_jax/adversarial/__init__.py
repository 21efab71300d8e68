"""Adversarial inputs: L-infinity attacks (FGSM, PGD), the detector objectives, their evaluation.

attacks: fgsm, pgd (keeps the best iterate), default_step_size (generic over a differentiable
  objective, maximised)
objectives: LowerScore (raise the flow likelihood / lower a score), LowerMMD, batch_mmd2
preprocessing: ThroughJPEG, jpeg_straight_through (BPDA through the detector's JPEG round trip)
classifier_sets: the attacks on the classifier and the sets they make (`{in}_pgd{k}`)
adaptive, adaptive_pgd, adaptive_summary: the adaptive attacks on the detector, their PGD runs
  and their before/after summary
evaluation: evaluate_adversarial, which builds the sets and scores them
"""

from inflow_jax.adversarial.attacks import default_step_size, fgsm, pgd
from inflow_jax.adversarial.objectives import LowerMMD, LowerScore, batch_mmd2
from inflow_jax.adversarial.preprocessing import ThroughJPEG, jpeg_straight_through
