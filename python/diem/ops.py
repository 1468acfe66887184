"""Linear operators ``A : [N, *x_shape] -> [N, *y_shape]``: the built-in ones, composition (``B @ A`` applies
``A`` first), and :class:`Function` for any linear, torch-differentiable Python callable."""

import numpy as np
import torch

from . import _native


def _as_tensor(a, what):
    """A torch tensor from a numpy array or a tensor (numpy shares memory: no copy)."""
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    if isinstance(a, (list, tuple, float, int)):
        return torch.as_tensor(np.asarray(a, dtype=np.float64))
    raise TypeError(f"{what}: expected a numpy array or a torch tensor, got {type(a).__name__}")


class Operator:
    """Base class of diem's operators."""

    _native: "_native.Operator"

    @property
    def x_shape(self):
        """The per-sample input shape."""
        return tuple(self._native.x_shape)

    @property
    def y_shape(self):
        """The per-sample output shape."""
        return tuple(self._native.y_shape)

    def apply(self, x):
        """``A x`` (numpy in, numpy out; torch in, torch out)."""
        if isinstance(x, torch.Tensor):
            return self._native.apply(x)
        return self._native.apply(_as_tensor(x, "x")).detach().numpy()

    __call__ = apply

    def adjoint(self, y):
        """``Aᵀ y``."""
        if isinstance(y, torch.Tensor):
            return self._native.adjoint(y)
        return self._native.adjoint(_as_tensor(y, "y")).detach().numpy()

    def __matmul__(self, other):
        """``self @ other``: ``other`` first, then ``self``."""
        return Compose(other, self)

    def __repr__(self):
        return f"{self._native.kind}(x_shape={self.x_shape}, y_shape={self.y_shape})"


class Mask(Operator):
    """Elementwise mask ``y = m ⊙ x``; ``mask`` is ``[P, *x_shape]`` (P = 1 or N), or ``x_shape`` is given."""

    def __init__(self, mask, x_shape=None):
        mask = _as_tensor(mask, "mask")
        if x_shape is None:
            x_shape = tuple(mask.shape[1:])
        self._native = _native.Operator.mask(mask, list(x_shape))


class Projection(Operator):
    """``y = P x`` with ``matrix : [P, m, d]`` (or ``[m, d]``, shared) on samples of ``d`` entries."""

    def __init__(self, matrix, x_shape=None):
        matrix = _as_tensor(matrix, "matrix")
        if matrix.dim() == 2:
            matrix = matrix.unsqueeze(0)
        if x_shape is None:
            x_shape = (matrix.shape[-1],)
        self._native = _native.Operator.projection(matrix, list(x_shape))


class KSpace(Operator):
    """Masked centered 2-D Fourier transform of ``[C, H, W]`` images; ``mask : [P, W]`` keeps columns."""

    def __init__(self, mask, x_shape):
        self._native = _native.Operator.kspace(_as_tensor(mask, "mask"), list(x_shape))


class Blur(Operator):
    """Convolution of ``[C, H, W]`` images with ``kernels : [P, kh, kw]`` (odd sizes)."""

    def __init__(self, kernels, x_shape, boundary="zero"):
        self._native = _native.Operator.blur(_as_tensor(kernels, "kernels"), list(x_shape), boundary)


class Downsample(Operator):
    """``factor``-times downsampling of ``[C, H, W]`` images (``average`` or ``bicubic``)."""

    def __init__(self, x_shape, factor, method="average"):
        self._native = _native.Operator.downsample(list(x_shape), int(factor), method)


class Compose(Operator):
    """``ops`` applied first to last."""

    def __init__(self, *ops):
        for op in ops:
            if not isinstance(op, Operator):
                raise TypeError(f"Compose: expected diem.ops operators, got {type(op).__name__}")
        self._native = _native.Operator.compose([op._native for op in ops])


class Function(Operator):
    """A linear Python callable ``forward : [N, *x_shape] -> [N, *y_shape]`` built from torch operations.

    Its adjoint is autograd's vector-Jacobian product, computed by the same libtorch, so ``forward`` must be
    linear and differentiable and must work in the dtype and on the device of its input.
    """

    def __init__(self, forward, x_shape, y_shape, name="function"):
        if not callable(forward):
            raise TypeError(f"forward: expected a callable, got {type(forward).__name__}")
        self.forward = forward
        self._native = _native.Operator.function(forward, list(x_shape), list(y_shape), name)
