"""Adversarial inputs: L-infinity attacks (FGSM, PGD), the detector objectives, and their evaluation.

  attacks: fgsm, pgd, default_step_size (generic over a differentiable objective, maximised)
  objectives: LowerScore (raise the flow likelihood / lower a score), LowerMMD, batch_mmd2
"""
from inflow_jax.adversarial.attacks import default_step_size, fgsm, pgd
from inflow_jax.adversarial.objectives import LowerMMD, LowerScore, batch_mmd2
