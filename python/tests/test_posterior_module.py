"""diem.posterior with a user's torch.nn.Module denoiser: MMPS takes its VJPs through the module's graph.

For a Gaussian prior N(0, s² I) the module below is the exact denoiser, and MMPS (Tweedie covariance, CG to
the observation dimension) is then exact (docs/method.md §5.1): its samples must follow the closed-form
posterior N(μ(y), Σ). A broken plumbing (no graph through the module, a wrong σ, a transposed adjoint) moves
the covariance far from Σ.
"""

import numpy as np
import pytest
import torch

import diem


class GaussianDenoiser(torch.nn.Module):
    """E[x | x_t] = s² / (s² + σ²) x_t for x ~ N(0, s² I), with s a parameter (a real module)."""

    def __init__(self, s):
        super().__init__()
        self.log_s = torch.nn.Parameter(torch.tensor(float(np.log(s))))
        self.calls = 0

    def forward(self, x_t, sigma):
        self.calls += 1
        v = torch.exp(2 * self.log_s).to(x_t.dtype)
        return v / (v + sigma[:, None] ** 2) * x_t


def exact_posterior(a, s, sigma_y, y):
    d = a.shape[1]
    prec = np.eye(d) / s**2 + a.T @ a / sigma_y**2
    cov = np.linalg.inv(prec)
    mean = y @ a @ cov.T / sigma_y**2
    return mean, cov


@pytest.mark.parametrize("solver", ["cg", "gmres"])
def test_mmps_with_a_module_samples_the_exact_gaussian_posterior(solver):
    rng = np.random.default_rng(0)
    n, d, m, s, sigma_y = 4096, 4, 2, 1.5, 0.3
    a = rng.normal(size=(m, d)) / np.sqrt(d)
    x = rng.normal(size=(n, d)) * s
    y = x @ a.T + sigma_y * rng.normal(size=(n, m))
    obs = diem.Observations(torch.from_numpy(y), diem.ops.Projection(torch.from_numpy(a)), sigma_y)
    module = GaussianDenoiser(s).double()
    samples = diem.posterior(module, obs, method="mmps", sampler="ddpm", steps=128, solver=solver,
                             iterations=m, seed=3)
    assert isinstance(samples, torch.Tensor) and samples.dtype == torch.float64
    assert module.calls > 128  # the module itself ran (one call per step, plus the VJPs' forwards)
    mean, cov = exact_posterior(a, s, sigma_y, y)
    r = samples.numpy() - mean
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(r.mean(0)) < 5 * se), (r.mean(0), se)
    emp = np.cov(r.T)
    rel = np.linalg.norm(emp - cov) / np.linalg.norm(cov)
    assert rel < 0.1, (emp, cov)
    # the prior's covariance (observations ignored) is far outside that tolerance
    assert np.linalg.norm(np.eye(d) * s**2 - cov) / np.linalg.norm(cov) > 0.5


def test_same_seed_same_samples_and_a_different_seed_differs():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1, 3))
    y = rng.normal(size=(8, 1)).astype(np.float32)
    obs = diem.Observations(y, diem.ops.Projection(a.astype(np.float32)), 0.2)
    module = GaussianDenoiser(1.0)
    one = diem.posterior(module, obs, steps=16, seed=5)
    two = diem.posterior(module, obs, steps=16, seed=5)
    three = diem.posterior(module, obs, steps=16, seed=6)
    np.testing.assert_array_equal(one, two)
    assert not np.allclose(one, three)


def test_a_denoiser_without_a_graph_is_refused_with_an_error():
    class Detached(torch.nn.Module):
        def forward(self, x_t, sigma):
            return (x_t / (1 + sigma[:, None] ** 2)).detach()

    obs = diem.Observations(np.zeros((4, 2)), diem.ops.Mask(np.ones((1, 2))), 0.1)
    with pytest.raises(diem.DiemError):
        diem.posterior(Detached(), obs, method="mmps", steps=4)


def test_every_posterior_method_runs_with_a_module():
    obs = diem.Observations(np.ones((4, 2)), diem.ops.Mask(np.ones((1, 2))), 0.1)
    module = GaussianDenoiser(1.0).double()
    for method in diem.POSTERIOR_METHODS:
        if method == "mmps-cov-x":
            with pytest.raises(diem.ConfigError, match="method"):
                diem.posterior(module, obs, method=method, steps=4)
            continue
        x = diem.posterior(module, obs, method=method, steps=4)
        assert x.shape == (4, 2) and np.isfinite(x).all(), method
