"""Shared fixtures: one libtorch thread (as the Rust tests), deterministic torch."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
