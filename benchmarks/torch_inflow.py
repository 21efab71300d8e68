"""The paper's InFlow architecture in plain PyTorch: the speed baseline for bench_flow.py.

Same equations and parameter names as the original code
(`module_list.{2k}.subnet_{s1,t1,s2,t2}.{0,2}`), written independently (no FrEIA graph machinery),
so the original checkpoint loads with `load_state_dict`. torch is an optional benchmark dependency;
the inflow_jax package never imports this file.
"""

import numpy as np
import torch
from torch import nn


def subnet(in_channels: int, out_channels: int, width: int) -> nn.Sequential:
  return nn.Sequential(
    nn.Conv2d(in_channels, width, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(width, out_channels, 3, padding=1),
  )


class Coupling(nn.Module):
  """s2 = f(s2net([x2,c])), y1 = exp(a s2) x1 + a t2net([x2,c]); s1 = f(s1net([y1,c])),
  y2 = exp(a s1) x2 + a t1net([y1,c]); log_det = sum s1 + sum s2 (the original's, ungated)."""

  def __init__(
    self, channels: int = 3, condition_channels: int = 3, width: int = 256, clamp: float = 2.0
  ):
    super().__init__()
    self.len1, self.len2 = channels // 2, channels - channels // 2
    self.clamp = clamp
    self.subnet_s1 = subnet(self.len1 + condition_channels, self.len2, width)
    self.subnet_t1 = subnet(self.len1 + condition_channels, self.len2, width)
    self.subnet_s2 = subnet(self.len2 + condition_channels, self.len1, width)
    self.subnet_t2 = subnet(self.len2 + condition_channels, self.len1, width)

  def forward(self, x, c, a):
    x1, x2 = x[:, : self.len1], x[:, self.len1 :]
    u2 = torch.cat([x2, c], 1)
    s2 = self.clamp * 0.636 * torch.atan(self.subnet_s2(u2))
    y1 = torch.exp(a * s2) * x1 + a * self.subnet_t2(u2)
    u1 = torch.cat([y1, c], 1)
    s1 = self.clamp * 0.636 * torch.atan(self.subnet_s1(u1))
    y2 = torch.exp(a * s1) * x2 + a * self.subnet_t1(u1)
    return torch.cat([y1, y2], 1), s1.sum((1, 2, 3)) + s2.sum((1, 2, 3))


class Permute(nn.Module):
  """y = x[:, perm], the original's PermuteRandom(seed): numpy RandomState(seed).permutation(C)."""

  def __init__(self, seed: int, channels: int = 3):
    super().__init__()
    self.perm = torch.from_numpy(np.random.RandomState(seed).permutation(channels))

  def forward(self, x, c, a):
    return x[:, self.perm], torch.zeros(x.shape[0])


class TorchInFlow(nn.Module):
  """block_0, perm_0, block_1, perm_1, ... on NCHW images; forward(x, a) -> (z, log_det)."""

  def __init__(self, num_blocks: int = 2, width: int = 256, channels: int = 3):
    super().__init__()
    layers = []
    for k in range(num_blocks):
      layers += [Coupling(channels, 3, width), Permute(k, channels)]
    self.module_list = nn.ModuleList(layers)

  def forward(self, x, a: float = 1.0):
    c = torch.full((x.shape[0], 3) + tuple(x.shape[2:]), float(a))
    log_det = torch.zeros(x.shape[0])
    for layer in self.module_list:
      x, layer_log_det = layer(x, c, a)
      log_det = log_det + layer_log_det
    return x, log_det
