"""diem.fit in memory and in a run directory (tiny: seconds on one CPU thread)."""

import numpy as np
import pytest
import torch

import diem


def tiny_config(laps=1):
    c = diem.preset("manifold", laps=laps)
    c["network"]["mlp"].update(features=2, hidden=[32, 32], embedding_features=16)
    c["gaussian"].update(rank=2, iterations=2, steps=16, chunk_size=64)
    c["estep"].update(sampler={"ddpm": {"steps": 8}}, chunk_size=128)
    c["mstep"].update(steps=64, batch_size=64, log_every=16)
    c["diagnostics"]["sinkhorn_subsample"] = None
    return c


def masked_mixture(n=256, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[-1.0, -1.0], [1.0, 1.0]])
    x = centers[rng.integers(0, 2, n)] + 0.1 * rng.normal(size=(n, 2))
    mask = (rng.random((n, 2)) < 0.7).astype(np.float32)
    mask[mask.sum(1) == 0, 0] = 1.0
    y = (x * mask + 0.01 * rng.normal(size=(n, 2))).astype(np.float32)
    return diem.Observations(y, diem.ops.Mask(mask), 0.01)


def test_a_tiny_fit_in_memory_gives_a_prior_that_samples_and_solves():
    obs = masked_mixture()
    prior = diem.fit(obs, tiny_config(), progress=False)
    assert prior.x_shape == (2,)
    assert "in memory, 1 laps" in repr(prior)
    x = prior.sample(64, steps=8)
    assert isinstance(x, torch.Tensor) and x.shape == (64, 2) and torch.isfinite(x).all()
    post = prior.posterior(obs, method="mmps", steps=8, iterations=1)
    assert isinstance(post, np.ndarray) and post.shape == (256, 2) and np.isfinite(post).all()
    # posterior samples agree with their observed coordinates (σ_y = 0.01)
    mask = obs._native.operator.apply(torch.ones(256, 2)).numpy()
    err = np.abs((post - obs.y) * mask)
    assert np.median(err[mask > 0]) < 0.1


def test_fit_in_a_run_directory_resumes_and_loads(tmp_path):
    obs = masked_mixture(128)
    run = tmp_path / "run"
    prior = diem.fit(obs, tiny_config(laps=1), out=run, progress=False)
    assert (run / "config.json").exists()
    # a second call on the same directory must not overwrite it
    with pytest.raises(diem.DataFileError, match="run"):
        diem.fit(obs, tiny_config(laps=1), out=run, progress=False)
    again = diem.fit(obs, out=run, resume=True, progress=False)
    assert "1 laps" in repr(again)
    loaded = diem.Prior.load(run)
    x = torch.randn(4, 2)
    s = torch.full((4,), 0.5)
    torch.testing.assert_close(loaded.denoise(x, s), prior.denoise(x, s))


def test_presets_are_sized_to_flat_samples():
    tiny = diem.preset("tiny", laps=3, x_dim=3)
    assert tiny["laps"] == 3 and tiny["network"]["mlp"]["features"] == 3 and tiny["gaussian"]["rank"] == 3
    assert tiny["mstep"]["steps"] < diem.preset("manifold")["mstep"]["steps"]
    assert diem.preset("manifold")["network"]["mlp"]["features"] == 5
    assert set(diem.PRESETS) == {"tiny", "manifold", "manifold-reference"}


class InterruptAt:
    """A progress display that raises KeyboardInterrupt (as Ctrl-C would) at its `at`-th advance."""

    def __init__(self, at):
        self.at, self.seen, self.labels = at, 0, []

    def start(self, label, total):
        self.labels.append(label)

    def advance(self, n):
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt

    def message(self, text):
        pass

    def finish(self):
        pass


def test_keyboard_interrupt_stops_the_fit_and_the_run_resumes(tmp_path):
    obs = masked_mixture(128)
    run = tmp_path / "run"
    display = InterruptAt(40)
    with pytest.raises(KeyboardInterrupt):
        diem.fit(obs, tiny_config(laps=2), out=run, progress=display)
    assert display.seen == 40  # nothing ran on after the interrupt
    assert (run / "config.json").exists()
    done = InterruptAt(0)
    prior = diem.fit(obs, out=run, resume=True, progress=done)
    assert "2 laps" in repr(prior)
    assert any("lap" in label for label in done.labels)
