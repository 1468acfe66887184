"""diem: diffusion priors learned from incomplete, noisy observations (DiEM), and posterior sampling (MMPS),
on a Rust core that shares Python's libtorch.

    >>> import diem, numpy as np
    >>> obs = diem.Observations(y, diem.ops.Mask(mask), noise_std=0.01)
    >>> prior = diem.fit(obs, "tiny", laps=2)               # DiEM in memory (or out="run/" on disk)
    >>> x = prior.posterior(obs, method="mmps")               # numpy in, numpy out
    >>> x = diem.posterior(my_module, obs, method="mmps")     # your own torch denoiser d(x_t, sigma)

Inputs are numpy arrays or torch tensors; results are torch tensors on the input's device, or numpy arrays
for numpy input. Errors are subclasses of `diem.DiemError` naming the file and the field.
"""

import json
import os

# Python's torch first: the extension resolves this libtorch (it never loads a copy of its own).
import torch  # noqa: F401

from . import ops
from ._errors import ConfigError, DataFileError, DiemError, NonFiniteError, ShapeError
from ._native import posterior_methods, samplers
from . import _native
from ._progress import Progress
from .ops import Operator, _as_tensor

__all__ = [
    "Observations",
    "Prior",
    "fit",
    "posterior",
    "preset",
    "PRESETS",
    "ops",
    "posterior_methods",
    "samplers",
    "DiemError",
    "ConfigError",
    "ShapeError",
    "DataFileError",
    "NonFiniteError",
]

#: Names accepted by ``method=`` (MMPS variants and the baselines).
POSTERIOR_METHODS = tuple(posterior_methods())
#: Names accepted by ``sampler=``.
SAMPLERS = tuple(samplers())


def _output(x, like_numpy, device):
    """A result as numpy (for numpy input) or a torch tensor on ``device``."""
    x = x.detach()
    if like_numpy:
        return x.cpu().numpy()
    return x.to(device)


class Observations:
    """Observations ``y = A x + noise``, noise ~ N(0, noise_std²), of N samples.

    ``y`` is ``[N, *operator.y_shape]`` (numpy or torch, float32/float64); ``operator`` a ``diem.ops``
    operator; ``noise_std`` a float or an array ``[1 or N, *y_shape]``.
    """

    def __init__(self, y, operator, noise_std):
        if not isinstance(operator, Operator):
            raise TypeError(f"operator: expected a diem.ops operator, got {type(operator).__name__}")
        self._numpy = not isinstance(y, torch.Tensor)
        y = _as_tensor(y, "y")
        self.device = y.device
        if not isinstance(noise_std, (int, float)):
            noise_std = _as_tensor(noise_std, "noise_std").to(y.device)
        else:
            noise_std = float(noise_std)
        self.operator = operator
        self._native = _native.Observations(y, operator._native, noise_std)

    @property
    def y(self):
        """The observations (as given: numpy or torch)."""
        return _output(self._native.y, self._numpy, self.device)

    def __len__(self):
        return len(self._native)

    def save(self, path):
        """Writes an ``.npz`` file that the ``diem fit`` command line reads (built-in operators only)."""
        self._native.save(os.fspath(path))

    @classmethod
    def load(cls, path, device="cpu"):
        """Reads an observation file (``.npz`` or ``.safetensors``, as the command line writes and reads)."""
        self = cls.__new__(cls)
        self._native = _native.Observations.load(os.fspath(path), str(device))
        self._numpy = False
        self.device = torch.device(device)
        self.operator = Operator.__new__(Operator)
        self.operator._native = self._native.operator
        return self

    def __repr__(self):
        return f"Observations(N={len(self)}, operator={self.operator!r})"


#: The names :func:`preset` knows.
PRESETS = ("tiny", "manifold", "manifold-reference")


def preset(name, laps=None, x_dim=None):
    """A named EM configuration as a dict, to edit and pass to :func:`fit`.

    ``manifold`` is the paper's manifold experiment (docs/method.md §9a: an MLP 5 → (256, 256, 256) → 5,
    65,536 training steps per lap, MMPS with 4096 predictor-corrector steps), ``manifold-reference`` the
    same with the authors' code's E-step, ``tiny`` a reduction of it that fits in seconds (an MLP
    (64, 64), 256 training steps, 64 sampling steps). ``x_dim`` sets the MLP's width and the Gaussian
    initialization's rank for flat samples of that many entries; ``laps`` the number of laps.
    """
    base = "manifold" if name == "tiny" else name
    if name not in PRESETS:
        raise ConfigError(f"config: unknown preset {name!r} (expected one of {', '.join(PRESETS)})")
    config = json.loads(_native.preset(base, 8))
    if name == "tiny":
        config["laps"] = 2
        config["network"]["mlp"].update(hidden=[64, 64], embedding_features=16)
        config["gaussian"].update(iterations=4, steps=64)
        config["estep"]["sampler"] = {"pc": {"steps": 64, "corrections": 1, "tau": 0.1}}
        config["mstep"].update(steps=256, batch_size=256, log_every=64)
        config["diagnostics"]["sinkhorn_subsample"] = 512
    if laps is not None:
        config["laps"] = int(laps)
    if x_dim is not None and "mlp" in config["network"]:
        config["network"]["mlp"]["features"] = int(x_dim)
        config["gaussian"]["rank"] = min(config["gaussian"]["rank"], int(x_dim))
    return config


def _config_json(config, laps, x_shape):
    if isinstance(config, str) and not (config.endswith(".json") or os.path.sep in config):
        x_dim = x_shape[0] if len(x_shape) == 1 else None
        config = preset(config, laps, x_dim)
    elif isinstance(config, (str, os.PathLike)):
        with open(config, encoding="utf-8") as f:
            config = json.load(f)
    if not isinstance(config, dict):
        raise ConfigError(f"config: expected a preset name, a dict or a .json path, got {type(config).__name__}")
    config = dict(config)
    if laps is not None:
        config["laps"] = laps
    return json.dumps(config)


def fit(observations, config="tiny", out=None, *, resume=False, laps=None, progress=True):
    """Learns a diffusion prior from ``observations`` by DiEM (docs/method.md §8) and returns it.

    ``config`` is a preset name (see :func:`preset`; its MLP is sized to flat samples), a dict or a
    ``.json`` path. Without ``out`` the fit
    runs in memory; with ``out`` it writes the crash-safe run directory, which ``resume=True`` continues
    (``config`` is then read from the directory). ``progress`` shows bars (tqdm: terminal or Jupyter), or is
    an object with ``start(label, total)``, ``advance(n)``, ``message(text)`` and ``finish()``.
    Ctrl-C (``KeyboardInterrupt``) stops after the current E-step chunk; a run directory keeps every
    completed lap.
    """
    if not isinstance(observations, Observations):
        raise TypeError("observations: expected diem.Observations")
    config_json = None if resume else _config_json(config, laps, observations.operator.x_shape)
    if progress is True:
        display = Progress()
    elif not progress:
        display = None
    else:
        display = progress  # any object with start(label, total), advance(n), message(text), finish()
    native = _native.fit(
        observations._native,
        config_json,
        out=None if out is None else os.fspath(out),
        resume=resume,
        progress=display,
    )
    return Prior(native)


class Prior:
    """A trained diffusion prior: ``Prior.load(dir)``, or the result of :func:`fit`."""

    def __init__(self, native):
        self._native = native

    @staticmethod
    def load(path, device="cpu"):
        """Loads a checkpoint directory or a run directory (its last lap)."""
        return Prior(_native.Prior.load(os.fspath(path), str(device)))

    def save(self, path):
        """Writes a checkpoint directory."""
        self._native.save(os.fspath(path))

    @property
    def x_shape(self):
        """The per-sample shape of the prior's samples."""
        return tuple(self._native.x_shape)

    def state_dict(self):
        """The network's variables by name, as torch tensors sharing the weights (detached)."""
        return dict(self._native.state_dict())

    @property
    def mean(self):
        """The prior mean where samplers start (per-sample shape), or None."""
        return self._native.mean

    @property
    def sigma_range(self):
        """The noise schedule's ``(sigma_min, sigma_max)``."""
        return tuple(self._native.sigma_range)

    def denoise(self, x_t, sigma):
        """The denoiser ``E[x | x_t]`` at noise level ``sigma`` (torch, differentiable)."""
        sigma = torch.as_tensor(sigma, dtype=x_t.dtype, device=x_t.device)
        return self._native.denoise(x_t, sigma)

    def sample(self, n, *, sampler="ddpm", steps=256, seed=0, numpy=False):
        """``n`` prior samples (a torch tensor, or numpy with ``numpy=True``)."""
        x = self._native.sample(int(n), sampler, int(steps), int(seed))
        return x.numpy() if numpy else x

    def posterior(self, observations, method="mmps", *, sampler="ddpm", steps=256, solver="cg", iterations=3,
                  zeta=1.0, seed=0, chunk=1024):
        """One posterior sample per observation (``method`` in ``diem.POSTERIOR_METHODS``)."""
        x = self._native.posterior(observations._native, method, sampler, int(steps), solver, int(iterations),
                                   float(zeta), int(seed), int(chunk))
        return _output(x, observations._numpy, observations.device)

    def __repr__(self):
        return repr(self._native)


def posterior(denoiser, observations, method="mmps", *, sampler="ddim", steps=64, solver="cg", iterations=1,
              zeta=1.0, seed=0, sigma_min=1e-3, sigma_max=1e2, mean=None):
    """Posterior samples with your own denoiser ``d(x_t, sigma) = E[x | x_t]``.

    ``denoiser`` is a ``torch.nn.Module`` (or any callable on torch tensors) taking ``x_t : [N, *x_shape]``
    and ``sigma : [N]`` (or a :class:`Prior`, which then runs without calling back into Python); it runs in
    the dtype and on the device of the observations. The samplers run on
    the VE schedule ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` starting at ``mean`` (default 0);
    MMPS takes its vector-Jacobian products through the module's autograd graph.
    """
    if not isinstance(observations, Observations):
        raise TypeError("observations: expected diem.Observations")
    if not callable(denoiser) and not isinstance(denoiser, Prior):
        raise TypeError(f"denoiser: expected a callable (e.g. a torch.nn.Module), got {type(denoiser).__name__}")
    if mean is not None:
        mean = _as_tensor(mean, "mean").to(observations.device)
    if isinstance(denoiser, Prior):
        denoiser = denoiser._native  # runs natively, without calling back into Python
    x = _native.posterior(denoiser, observations._native, method, sampler, int(steps), solver, int(iterations),
                          float(zeta), int(seed), float(sigma_min), float(sigma_max), mean)
    return _output(x, observations._numpy, observations.device)
