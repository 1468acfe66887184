"""azula side of `cargo xtask sweep --frontier` (issue 14: accuracy per second against azula).

Reads the problem diem exported (`problem.safetensors`: per dimension d the mixture centres, the component
standard deviation s, the projection W, the observation y, σ_y and the exact posterior sets) and the run list
(`config.json`), rebuilds the closed-form mixture denoiser as a torch module,

    E[x | x_t] = (σ_t² Σ_i w_i μ_i + s² x_t) / (s² + σ_t²),   w = softmax_i(−‖x_t − μ_i‖² / (2 (s² + σ_t²)))

(docs/method.md §10.2), checks it against the exact posterior sets' shapes, then samples N posterior draws with
azula's MMPSDenoiser (CG, 1 or 3 iterations) on DDIMSampler / DDPMSampler for each configuration, in float64
on one thread unless told otherwise. Each run is timed around `sampler.init` + `sampler(x)`; the samples go to
`azula-d{d}-rep{r}.safetensors` and one JSON line per run is appended to `azula.jsonl` (diem computes the
divergence of the samples). Network evaluations: the prior's forwards are counted; VJPs are azula's
`iterations + 1` per step (one per CG iteration and one for the final gradient, guidance/mmps.py).
"""

import argparse
import json
import os
import resource
import time

import torch
from azula.denoise import Denoiser, DiracPosterior
from azula.guidance import MMPSDenoiser
from azula.linalg.covariance import IsotropicCovariance
from azula.noise import VESchedule
from azula.sample import DDIMSampler, DDPMSampler

from safetensors_io import read_safetensors, write_safetensors


class MixtureDenoiser(Denoiser):
    """The exact denoiser of (1/K) Σ_i N(μ_i, s² I) under azula's VE schedule; counts its forwards."""

    def __init__(self, centres, std, schedule):
        super().__init__()
        self.register_buffer("centres", centres)
        self.register_buffer("half_norm", 0.5 * (centres**2).sum(-1))
        self.s2 = float(std) ** 2
        self.schedule = schedule
        self.forwards = 0

    def forward(self, x_t, t, **kwargs):
        self.forwards += 1
        _, sigma_t = self.schedule(t)
        sigma2 = (sigma_t.to(x_t.dtype) ** 2).reshape(-1, 1)
        v = sigma2 + self.s2
        # The common ‖x_t‖² drops out of the softmax (as diem's MixtureDenoiser).
        w = torch.softmax((x_t @ self.centres.T - self.half_norm) / v, dim=-1)
        return DiracPosterior(mean=(sigma2 * (w @ self.centres) + self.s2 * x_t) / v)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_one(prior, y, W, sigma_y, n, sampler_name, iterations, steps, seed):
    """One timed azula run: MMPS(CG, `iterations`) on the named sampler; returns the samples and a record."""
    d = W.shape[1]

    def A(x):
        return x @ W.T

    cov_y = IsotropicCovariance(torch.tensor(sigma_y**2, dtype=torch.float64))
    post = MMPSDenoiser(prior, y=y.expand(n, -1), A=A, cov_y=cov_y, solver="cg", iterations=iterations)
    cls = {"ddim": DDIMSampler, "ddpm": DDPMSampler}[sampler_name]
    sampler = cls(post, steps=steps, silent=True, dtype=torch.float64)
    mean = prior.centres.mean(0)
    torch.manual_seed(seed)
    prior.forwards = 0
    cpu0 = cpu_seconds()
    start = time.perf_counter()
    # diem starts from its prior mean plus σ_{t_0} z (var = 0 here gives the same law).
    x = sampler.init((n, d), mean=mean, var=0.0, dtype=torch.float64)
    x = sampler(x)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu0
    return x, seconds, cpu, prior.forwards, steps * (iterations + 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="the folder `frontier prepare` wrote")
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--rep", type=int, default=0, help="repetition, also the noise seed")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.dir, "config.json")) as f:
        config = json.load(f)
    tensors = read_safetensors(os.path.join(args.dir, "problem.safetensors"))
    d = args.dim
    get = lambda k: tensors[f"d{d}.{k}"].to(torch.float64)  # noqa: E731
    centres, W, y, u1 = get("centres"), get("w"), get("y"), get("u1")
    std, sigma_y = get("std").item(), get("sigma_y").item()
    n = u1.shape[0]
    assert centres.shape[1] == d and W.shape == (y.shape[0], d), "problem file does not match d"
    schedule = VESchedule(sigma_min=1e-3, sigma_max=1e1)  # diem's VeSchedule::manifold()
    prior = MixtureDenoiser(centres, std, schedule)
    runs = []
    for sampler in config["azula_samplers"]:
        for it in config["cg_iterations"]:
            for steps in config["azula_steps"]:
                runs.append((sampler, it, steps))
    reference = ("ddim", 1, config["reference_steps"])
    if reference not in runs:
        runs.append(reference)
    # Warm-up (untimed), as diem's side.
    run_one(prior, y, W, sigma_y, n, runs[0][0], runs[0][1], 2, 2**31)
    out_name = f"azula-d{d}-rep{args.rep}.safetensors"
    samples, lines = {}, []
    for sampler, it, steps in runs:
        x, seconds, cpu, forwards, vjps = run_one(prior, y, W, sigma_y, n, sampler, it, steps, args.rep)
        key = f"{sampler}/mmps_cg{it}/{steps}"
        samples[key] = x
        record = {
            "implementation": "azula",
            "sampler": sampler,
            "method": f"mmps_cg{it}",
            "steps": steps,
            "dim": d,
            "rep": args.rep,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "forwards": forwards,
            "vjps": vjps,
            "threads": torch.get_num_threads(),
            "divergence": None,
            "samples_file": out_name,
            "samples_key": key,
        }
        lines.append(json.dumps(record))
        finite = bool(torch.isfinite(x).all().item())
        print(
            f"  azula d {d:>2} rep {args.rep} {sampler:<8} mmps_cg{it:<2}  T {steps:>3}: {seconds:>8.3f} s, "
            f"{forwards + vjps:>5} evals{'' if finite else ', NON-FINITE'}",
            flush=True,
        )
    write_safetensors(os.path.join(args.dir, out_name), samples)
    with open(os.path.join(args.dir, "azula.jsonl"), "a") as f:
        for line in lines:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
