"""diem.ops.Function: a Python callable as an operator, adjoint by autograd through the shared libtorch."""

import numpy as np
import pytest
import torch

import diem


def make(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 6, dtype=torch.float64, generator=g)

    def forward(x):  # [N, 2, 3] -> [N, 3]: a linear map with a nonlinear-looking torch program
        flat = x.reshape(x.shape[0], -1)
        return torch.roll(flat @ w.T, 1, dims=1) + 0.5 * flat[:, :3].flip(1)

    return forward, w


def test_autograd_adjoint_passes_the_dot_product_test():
    forward, _ = make()
    op = diem.ops.Function(forward, x_shape=(2, 3), y_shape=(3,))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 3, dtype=torch.float64, generator=g)
    v = torch.randn(5, 3, dtype=torch.float64, generator=g)
    ax = op.apply(x)
    atv = op.adjoint(v)
    assert atv.shape == (5, 2, 3)
    lhs = (ax * v).sum(dim=1)
    rhs = (x * atv).sum(dim=(1, 2))
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    # and it is the true transpose, not just any map passing one test
    jac = torch.autograd.functional.jacobian(lambda z: forward(z.reshape(1, 2, 3)).reshape(3), x[0].flatten())
    torch.testing.assert_close(atv[0].flatten(), jac.T @ v[0], rtol=1e-12, atol=1e-12)


def test_function_operator_samples_a_posterior():
    forward, _ = make()
    op = diem.ops.Function(forward, (2, 3), (3,))
    y = np.random.default_rng(0).normal(size=(16, 3))
    obs = diem.Observations(y, op, 0.1)
    x = diem.posterior(lambda x, s: x / (1 + s[:, None, None] ** 2), obs, steps=16)
    assert x.shape == (16, 2, 3) and np.isfinite(x).all()


def test_python_exception_in_the_operator_is_raised_as_itself():
    def broken(x):
        raise ZeroDivisionError("inside the operator")

    op = diem.ops.Function(broken, (2,), (2,))
    with pytest.raises(ZeroDivisionError, match="inside the operator"):
        op.apply(torch.ones(1, 2))


def test_wrong_output_shape_is_an_error_not_an_abort():
    op = diem.ops.Function(lambda x: x[:, :1], (2,), (2,), name="bad")
    with pytest.raises(diem.DiemError, match="bad"):
        op.apply(torch.ones(3, 2))
