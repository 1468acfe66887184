"""MMPS with a PyTorch module equals the Rust side for the same weights.

A prior is trained by diem (Rust network); the same weights are copied into a plain PyTorch re-implementation of
diem's MLP denoiser (EDM preconditioning, sine embedding of ln σ, Linear → SiLU → LayerNorm without affine).
diem.posterior with that module (called back from Rust, VJPs through PyTorch's autograd) must draw the same
samples as diem.posterior with the prior itself (no Python in the loop), for the same seed.
"""

import numpy as np
import pytest
import torch

import diem
from test_fit import masked_mixture, tiny_config


class EdmMlp(torch.nn.Module):
    """d(x_t, σ) = c_skip x_t + c_out F(c_in x_t, emb(ln σ)) with diem's MLP F, from diem's variables."""

    def __init__(self, state):
        super().__init__()
        self.hidden = torch.nn.ModuleList()
        i = 0
        while f"hidden.{i}.weight" in state:
            w = state[f"hidden.{i}.weight"]
            layer = torch.nn.Linear(w.shape[1], w.shape[0])
            layer.weight.data.copy_(w)
            layer.bias.data.copy_(state[f"hidden.{i}.bias"])
            self.hidden.append(layer)
            i += 1
        w = state["output.weight"]
        self.output = torch.nn.Linear(w.shape[1], w.shape[0])
        self.output.weight.data.copy_(w)
        self.output.bias.data.copy_(state["output.bias"])
        k = (self.hidden[0].in_features - w.shape[0]) // 2
        self.register_buffer("freqs", torch.tensor([1e-4 ** (j / (k - 1)) for j in range(k)]))

    def forward(self, x_t, sigma):
        sigma = sigma.to(x_t.dtype).reshape(-1, 1)
        s2p1 = sigma**2 + 1
        c_skip, c_in = 1 / s2p1, torch.rsqrt(s2p1)
        angles = torch.log(sigma) * self.freqs
        h = torch.cat([x_t * c_in, torch.sin(angles), torch.cos(angles)], dim=-1)
        for layer in self.hidden:
            h = torch.nn.functional.layer_norm(torch.nn.functional.silu(layer(h)), (layer.out_features,))
        return c_skip * x_t + sigma * c_in * self.output(h)


@pytest.fixture(scope="module")
def prior():
    return diem.fit(masked_mixture(256), tiny_config(), progress=False)


def test_the_module_reproduces_the_rust_denoiser(prior):
    module = EdmMlp(prior.state_dict())
    x = torch.randn(64, 2)
    sigma = torch.logspace(-3, 1, 64)
    torch.testing.assert_close(module(x, sigma), prior.denoise(x, sigma), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method,solver", [("mmps", "cg"), ("mmps", "gmres"), ("dps", "cg")])
def test_posterior_with_the_module_equals_the_rust_side(prior, method, solver):
    obs = masked_mixture(64, seed=3)
    module = EdmMlp(prior.state_dict())
    lo, hi = prior.sigma_range
    common = dict(method=method, sampler="ddpm", steps=16, solver=solver, iterations=2, seed=7, sigma_min=lo,
                  sigma_max=hi)
    rust = diem.posterior(prior, obs, **common)
    python = diem.posterior(module, obs, mean=prior.mean, **common)
    np.testing.assert_allclose(python, rust, rtol=1e-5, atol=1e-5)  # bitwise equal on CPU today
    # not trivially equal: other weights give other samples
    with torch.no_grad():
        module.output.bias.add_(0.5)
    other = diem.posterior(module, obs, mean=prior.mean, **common)
    assert np.abs(other - rust).max() > 0.05
