# %% [markdown]
# # Learning a prior from masked 2-D data with diem
#
# A notebook-style script (cells marked `# %%`; run it with `python mixture2d.py`, or open it in Jupyter or
# VS Code as a notebook). We never see the clean points `x`: each observation shows one coordinate of
# a point, or both, with a little noise. DiEM (`diem.fit`) learns a diffusion prior from these masked
# observations alone; we then draw prior samples and posterior samples for the observations, and plot them.
#
# Needs the diem wheel (`cargo xtask wheel`, then `pip install target/wheels/release/diem-*.whl`) and
# matplotlib (`pip install matplotlib`). About ten minutes on a 2-core CPU (writes mixture2d.png).

# %%
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import diem  # noqa: E402

rng = np.random.default_rng(0)

# %% [markdown]
# ## Data: 8 Gaussians on a circle, seen through random masks

# %%
n = 4096
angles = 2 * np.pi * rng.integers(0, 8, n) / 8
x = np.stack([np.cos(angles), np.sin(angles)], 1) * 1.5 + 0.1 * rng.normal(size=(n, 2))
# Each observation keeps x₁ (40 %), x₂ (40 %) or both (20 %).
kind = rng.choice(3, size=n, p=[0.4, 0.4, 0.2])
mask = np.stack([kind != 1, kind != 0], 1).astype(np.float32)
noise_std = 0.05
y = (mask * x + noise_std * rng.normal(size=(n, 2))).astype(np.float32)
observations = diem.Observations(y, diem.ops.Mask(mask), noise_std)
print(observations)

# %% [markdown]
# ## DiEM: a diffusion prior from the masked observations
#
# The manifold preset of the paper, made small: a 2-D MLP, 4 laps of (train, then sample the posterior of
# every observation with MMPS).

# %%
config = diem.preset("manifold", laps=4)
config["network"]["mlp"].update(features=2, hidden=[128, 128, 128], embedding_features=32)
config["gaussian"].update(rank=2)
config["estep"].update(sampler={"ddpm": {"steps": 64}}, chunk_size=1024)
config["mstep"].update(steps=2048, batch_size=256, log_every=256)
config["diagnostics"]["sinkhorn_subsample"] = None
prior = diem.fit(observations, config, progress=sys.stderr.isatty())
print(prior)

# %% [markdown]
# ## Prior and posterior samples

# %%
prior_samples = prior.sample(2048, steps=128, numpy=True)
posterior_samples = prior.posterior(observations, method="mmps", steps=128)  # numpy in, numpy out

fig, axes = plt.subplots(1, 3, figsize=(12, 4.3), sharex=True, sharey=True, layout="constrained")
axes[0].scatter(*x[:2048].T, s=2, c="tab:orange")
axes[0].set_title("ground truth (never seen)")
axes[1].scatter(*prior_samples.T, s=2, c="tab:blue")
axes[1].set_title("prior samples (learned from masked y)")
axes[2].scatter(*posterior_samples[:2048].T, s=2, c="tab:green")
axes[2].set_title("posterior samples, one per observation")
for ax in axes:
    ax.set_aspect("equal")
    ax.set_xlim(-2.5, 2.5)
    ax.set_ylim(-2.5, 2.5)
fig.savefig("mixture2d.png", dpi=100)
print("wrote mixture2d.png")

# %% [markdown]
# Posterior samples agree with what each observation saw:

# %%
err = np.abs(mask * (posterior_samples - y))[mask > 0]
print(f"median |x - y| on observed coordinates: {np.median(err):.3f} (noise std {noise_std})")
radius = np.linalg.norm(prior_samples, axis=1)
print(f"prior samples' radius: median {np.median(radius):.2f} (truth 1.5)")
