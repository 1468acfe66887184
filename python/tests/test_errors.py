"""Bad inputs raise the right exception, naming the field or the file; nothing aborts the interpreter."""

import numpy as np
import pytest
import torch

import diem


def obs(n=4, d=2):
    return diem.Observations(np.zeros((n, d)), diem.ops.Mask(np.ones((1, d))), 0.1)


def test_exception_classes_have_the_builtin_bases():
    assert issubclass(diem.ConfigError, ValueError) and issubclass(diem.ConfigError, diem.DiemError)
    assert issubclass(diem.ShapeError, ValueError)
    assert issubclass(diem.DataFileError, OSError)


def test_y_that_does_not_fit_the_operator_is_a_shape_error():
    with pytest.raises(diem.ShapeError, match="y"):
        diem.Observations(np.zeros((4, 3)), diem.ops.Mask(np.ones((1, 2))), 0.1)


def test_integer_observations_are_refused():
    with pytest.raises(diem.ConfigError, match="dtype"):
        diem.Observations(np.zeros((4, 2), dtype=np.int64), diem.ops.Mask(np.ones((1, 2))), 0.1)


def test_negative_noise_is_a_config_error():
    with pytest.raises(diem.DiemError):
        diem.Observations(np.zeros((4, 2)), diem.ops.Mask(np.ones((1, 2))), -1.0)


def test_unknown_names_are_config_errors_naming_the_field():
    module = lambda x, s: x  # noqa: E731
    with pytest.raises(diem.ConfigError, match="method.*magic"):
        diem.posterior(module, obs(), method="magic")
    with pytest.raises(diem.ConfigError, match="sampler"):
        diem.posterior(module, obs(), sampler="nope")
    with pytest.raises(diem.ConfigError, match="solver"):
        diem.posterior(module, obs(), solver="qr")
    with pytest.raises(diem.ConfigError, match="steps"):
        diem.posterior(module, obs(), steps=0)
    with pytest.raises(diem.ConfigError, match="preset"):
        diem.preset("huge")


def test_a_bad_config_names_the_field():
    c = diem.preset("manifold", laps=1)
    c["estep"]["chunk_size"] = 0
    with pytest.raises(diem.ConfigError, match="chunk_size"):
        diem.fit(obs(), c, progress=False)
    c = diem.preset("manifold", laps=1)
    c["surprise"] = 1
    with pytest.raises(diem.ConfigError, match="surprise"):
        diem.fit(obs(), c, progress=False)


def test_a_missing_prior_directory_names_the_path(tmp_path):
    with pytest.raises(diem.DataFileError, match="nowhere"):
        diem.Prior.load(tmp_path / "nowhere")


def test_a_denoiser_returning_the_wrong_shape_is_a_shape_error():
    with pytest.raises(diem.ShapeError, match="denoiser"):
        diem.posterior(lambda x, s: x[:, :1], obs(), steps=2)


def test_a_python_error_inside_the_denoiser_comes_back_as_itself():
    def broken(x, s):
        raise KeyError("inside the denoiser")

    with pytest.raises(KeyError, match="inside the denoiser"):
        diem.posterior(broken, obs(), steps=2)


def test_a_rust_panic_is_an_exception_not_an_abort():
    with pytest.raises(diem.DiemError, match="deliberate panic"):
        diem._native._panic()


def test_wrong_argument_types_are_type_errors():
    with pytest.raises(TypeError):
        diem.Observations("not an array", diem.ops.Mask(np.ones((1, 2))), 0.1)
    with pytest.raises(TypeError):
        diem.posterior(42, obs())
