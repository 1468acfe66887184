"""Builds the TorchScript fixtures of diem-metrics' tests: tiny fixed-weight 'inception' and 'lpips' modules,
an input batch with the outputs PyTorch computes for it, and torch-fidelity's Inception Score on fixed logits.
Usage: python fixtures.py OUT_DIR"""
import sys
from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

out = sys.argv[1]
torch.manual_seed(0)


class Base(nn.Module):
    """Resize to 16x16, map [0,255] to [-1,1], conv + relu, global avg and max pool (16 features), linear logits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        h = F.relu(self.conv(x / 127.5 - 1.0))
        f = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        f = torch.tanh(self.proj(f)) * 3.0
        return f, self.head(f)


class Full(nn.Module):
    def __init__(self, base: Base):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.base(x)


class FeaturesOnly(nn.Module):
    def __init__(self, base: Base):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)[0]


class ConstantLogits(nn.Module):
    def __init__(self, base: Base):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        f, l = self.base(x)
        return f, torch.zeros_like(l) + 0.25


class Triple(nn.Module):
    def __init__(self, base: Base):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f, l = self.base(x)
        return f, l, f


class WrongBatch(nn.Module):
    def __init__(self, base: Base):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        f, l = self.base(x)
        return f[:1], l[:1]


class Mse(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x - y) ** 2).mean(dim=(1, 2, 3))


class MseKeepdim(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x - y) ** 2).mean(dim=(1, 2, 3), keepdim=True)


class PerChannel(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x - y) ** 2).mean(dim=(2, 3))


base = Base().eval()
for name, module in [
    ("inception_full", Full(base)),
    ("inception_features", FeaturesOnly(base)),
    ("inception_constant", ConstantLogits(base)),
    ("inception_triple", Triple(base)),
    ("inception_wrong_batch", WrongBatch(base)),
    ("lpips_mse", Mse()),
    ("lpips_keepdim", MseKeepdim()),
    ("lpips_per_channel", PerChannel()),
]:
    torch.jit.script(module.eval()).save(f"{out}/{name}.pt")

# An input batch in [0, 255] (quantized) at a size the module must resize, and what PyTorch computes for it.
images = (torch.rand(13, 3, 20, 24) * 255.0).round()
with torch.no_grad():
    features, logits = base(images)
np.save(f"{out}/images.npy", images.numpy().astype(np.float32))
np.save(f"{out}/features.npy", features.numpy().astype(np.float32))
np.save(f"{out}/logits.npy", logits.numpy().astype(np.float32))

# torch-fidelity's isc_features_to_metric (shuffle=True, rng_seed=2020), verbatim in substance.
def isc(feature: torch.Tensor, splits: int, shuffle: bool, rng_seed: int = 2020):
    n = feature.shape[0]
    if shuffle:
        rng = np.random.RandomState(rng_seed)
        feature = feature[rng.permutation(n), :]
    feature = feature.double()
    p = feature.softmax(dim=1)
    log_p = feature.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        p_chunk = p[(i * n // splits): ((i + 1) * n // splits), :]
        log_p_chunk = log_p[(i * n // splits): ((i + 1) * n // splits), :]
        q_chunk = p_chunk.mean(dim=0, keepdim=True)
        log_q_chunk = torch.log(q_chunk)
        kl = p_chunk * (log_p_chunk - log_q_chunk)
        kl = kl.sum(dim=1).mean().exp().item()
        scores.append(kl)
    return [float(np.mean(scores)), float(np.std(scores))]


is_logits = torch.randn(103, 10, dtype=torch.float64) * 2.0
np.save(f"{out}/is_logits.npy", is_logits.numpy())
np.save(f"{out}/is_shuffled.npy", np.array(isc(is_logits, 10, True), dtype=np.float64))
np.save(f"{out}/is_ordered.npy", np.array(isc(is_logits, 7, False), dtype=np.float64))
np.save(f"{out}/permutation.npy", np.random.RandomState(2020).permutation(1000).astype(np.int64))
np.save(f"{out}/permutation_seed7.npy", np.random.RandomState(7).permutation(37).astype(np.int64))
# Feature statistics written by NumPy, as pytorch-fid does (np.savez) and compressed.
rng = np.random.RandomState(0)
mu, a = rng.randn(5), rng.randn(5, 5)
np.save(f"{out}/numpy_mu.npy", mu)
np.save(f"{out}/numpy_sigma.npy", a @ a.T)
np.savez(f"{out}/numpy_stats.npz", mu=mu, sigma=a @ a.T, count=np.int64(77))
np.savez_compressed(f"{out}/numpy_stats_compressed.npz", mu=mu, sigma=a @ a.T)
print("ok")
