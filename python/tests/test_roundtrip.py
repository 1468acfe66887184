"""Arrays cross the boundary intact: numpy in, numpy out; torch in, torch out (same storage, same graph)."""

import numpy as np
import pytest
import torch

import diem


def test_torch_tensor_crosses_without_copy_and_keeps_its_graph():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = diem._native._double(x)  # computed by libtorch on the Rust side
    assert torch.equal(y, 2 * x)
    assert y.grad_fn is not None
    y.sum().backward()  # the graph built in Rust is backpropagated from Python
    assert torch.equal(x.grad, torch.full_like(x, 2.0))


def test_a_tensor_made_in_rust_outlives_the_rust_handle():
    ys = [diem._native._double(torch.full((1000,), float(i))) for i in range(50)]
    for i, y in enumerate(ys):
        assert torch.equal(y, torch.full((1000,), 2.0 * i))


def test_observations_y_round_trips_numpy_and_torch():
    y = np.random.default_rng(0).normal(size=(5, 3))
    mask = diem.ops.Mask(np.ones((1, 3)))
    obs = diem.Observations(y, mask, noise_std=0.1)
    out = obs.y
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, y)
    yt = torch.from_numpy(y.astype(np.float32))
    obs_t = diem.Observations(yt, mask, noise_std=0.1)
    assert isinstance(obs_t.y, torch.Tensor)
    assert obs_t.y.data_ptr() == yt.data_ptr()  # the very same storage


def test_builtin_operators_apply_on_numpy_and_torch():
    m = np.array([[1.0, 0.0, 1.0, 0.0]])
    x = np.arange(8.0).reshape(2, 4)
    op = diem.ops.Mask(m)
    np.testing.assert_array_equal(op.apply(x), x * m)
    np.testing.assert_array_equal(op.adjoint(x), x * m)
    p = np.random.default_rng(1).normal(size=(2, 4))
    proj = diem.ops.Projection(p)
    np.testing.assert_allclose(proj.apply(x), x @ p.T, rtol=1e-12)
    np.testing.assert_allclose(proj.adjoint(x[:, :2]), x[:, :2] @ p, rtol=1e-12)
    both = proj @ op  # the mask first, then the projection
    np.testing.assert_allclose(both.apply(x), (x * m) @ p.T, rtol=1e-12)
    assert both.x_shape == (4,) and both.y_shape == (2,)


def test_image_operators_have_the_documented_shapes():
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    down = diem.ops.Downsample((1, 8, 8), 2)
    assert down.apply(x).shape == (2, 1, 4, 4)
    torch.testing.assert_close(down.apply(x), torch.nn.functional.avg_pool2d(x, 2))
    delta = torch.zeros(1, 3, 3, dtype=torch.float64)
    delta[0, 1, 1] = 1.0
    blur = diem.ops.Blur(delta, (1, 8, 8))
    torch.testing.assert_close(blur.apply(x), x)  # a centred delta kernel is the identity
    box = diem.ops.Blur(torch.ones(1, 3, 3, dtype=torch.float64) / 9, (1, 8, 8))
    inner = box.apply(x)[:, :, 1:-1, 1:-1]
    torch.testing.assert_close(inner, torch.nn.functional.avg_pool2d(x, 3, stride=1))
    ks = diem.ops.KSpace(torch.ones(1, 8, dtype=torch.float64), (1, 8, 8))
    # all columns kept: the centred unitary FFT, whose adjoint is its inverse
    torch.testing.assert_close(ks.adjoint(ks.apply(x)), x)


def test_prior_results_follow_the_input_kind():
    # posterior with a numpy observation set returns numpy; with torch returns torch on the same device
    d = 3
    module = lambda x, s: x / (1 + s[:, None] ** 2)  # noqa: E731  exact denoiser of N(0, I)
    y = np.random.default_rng(2).normal(size=(4, d)).astype(np.float32)
    op = diem.ops.Mask(np.ones((1, d), dtype=np.float32))
    x_np = diem.posterior(module, diem.Observations(y, op, 0.5), steps=8)
    assert isinstance(x_np, np.ndarray) and x_np.shape == (4, d) and x_np.dtype == np.float32
    x_t = diem.posterior(module, diem.Observations(torch.from_numpy(y), op, 0.5), steps=8)
    assert isinstance(x_t, torch.Tensor) and x_t.device == torch.device("cpu")
    np.testing.assert_allclose(x_np, x_t.numpy(), rtol=0, atol=0)  # same seed, same samples


def test_observations_round_trip_through_the_command_lines_file_format(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.normal(size=(6, 2, 3))
    matrix = rng.normal(size=(6, 2 * 3, 4)).reshape(6, 6, 4)
    obs = diem.Observations(y.reshape(6, 6), diem.ops.Projection(matrix), 0.25)
    path = tmp_path / "obs.npz"
    obs.save(path)
    back = diem.Observations.load(path)
    assert len(back) == 6 and back.operator.x_shape == (4,) and back.operator.y_shape == (6,)
    np.testing.assert_array_equal(back.y.numpy(), y.reshape(6, 6))
    x = torch.from_numpy(rng.normal(size=(6, 4)))
    torch.testing.assert_close(back.operator.apply(x), obs.operator.apply(x))
    with pytest.raises(diem.DataFileError, match="missing.npz"):
        diem.Observations.load(tmp_path / "missing.npz")
