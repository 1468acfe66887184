"""azula side of `cargo xtask bench posterior`.

Builds the manifold MLP denoiser of docs/method.md §9a (EDM preconditioning, c_noise = ln σ, sine embedding with
frequencies from 1 to 1e-4, Linear → SiLU → LayerNorm without affine ×3, output Linear) from the weights that
diem exported, checks that it reproduces diem's probe outputs, then times one azula sampler on the same
observations and prints one JSON line (same fields as diem's `BenchResult`).

Methods: ddim (azula.sample.DDIMSampler), dps (azula.guidance.DPSSampler, zeta = 1), mmps1 / mmps3
(azula.guidance.MMPSDenoiser with CG, 1 or 3 iterations, on DDIMSampler).
"""

import argparse
import json
import math
import time

import torch
from azula.denoise import Denoiser, DiracPosterior
from azula.guidance import DPSSampler, MMPSDenoiser
from azula.linalg.covariance import IsotropicCovariance
from azula.noise import VESchedule
from azula.sample import DDIMSampler

from safetensors_io import read_safetensors


class EdmMlp(torch.nn.Module):
    """d(x_t, σ) = c_skip x_t + c_out F(c_in x_t, emb(ln σ)) with diem's MLP F."""

    def __init__(self, tensors):
        super().__init__()
        self.hidden = torch.nn.ModuleList()
        i = 0
        while f"net.hidden.{i}.weight" in tensors:
            w = tensors[f"net.hidden.{i}.weight"]
            layer = torch.nn.Linear(w.shape[1], w.shape[0])
            layer.weight.data.copy_(w)
            layer.bias.data.copy_(tensors[f"net.hidden.{i}.bias"])
            self.hidden.append(layer)
            i += 1
        w = tensors["net.output.weight"]
        self.output = torch.nn.Linear(w.shape[1], w.shape[0])
        self.output.weight.data.copy_(w)
        self.output.bias.data.copy_(tensors["net.output.bias"])
        features = self.hidden[0].in_features - w.shape[0]
        k = features // 2
        freqs = [1e-4 ** (j / (k - 1)) for j in range(k)]
        self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float32))
        self.requires_grad_(False)

    def forward(self, x_t, sigma):
        sigma = sigma.to(x_t.dtype).reshape(-1, 1).expand(x_t.shape[0], 1)
        s2p1 = sigma**2 + 1
        c_skip, c_in = 1 / s2p1, torch.rsqrt(s2p1)
        c_out = sigma * c_in
        angles = torch.log(sigma) * self.freqs
        h = torch.cat([x_t * c_in, torch.sin(angles), torch.cos(angles)], dim=-1)
        for layer in self.hidden:
            h = torch.nn.functional.layer_norm(torch.nn.functional.silu(layer(h)), (layer.out_features,), eps=1e-5)
        return c_skip * x_t + c_out * self.output(h)


class AzulaMlpDenoiser(Denoiser):
    """The same network behind azula's Denoiser interface (VE schedule, σ from t)."""

    def __init__(self, net, schedule):
        super().__init__()
        self.net = net
        self.schedule = schedule

    def forward(self, x_t, t, **kwargs):
        _, sigma_t = self.schedule(t)
        return DiracPosterior(mean=self.net(x_t, sigma_t))


def peak_rss_mib(field="VmHWM:"):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problem", required=True)
    p.add_argument("--method", required=True, choices=["ddim", "dps", "mmps1", "mmps3"])
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tensors = read_safetensors(args.problem)
    net = EdmMlp(tensors).to(device)
    with torch.no_grad():
        probe = net(tensors["probe.x"].to(device), tensors["probe.sigma"].to(device)).cpu()
    err = (probe - tensors["probe.out"]).abs().max().item()
    assert err < 1e-4, f"azula-side MLP disagrees with diem's probe outputs: max |Δ| = {err:.3e}"
    schedule = VESchedule(sigma_min=1e-3, sigma_max=1e1)
    prior = AzulaMlpDenoiser(net, schedule)
    A_mat = tensors["A"].to(device)
    y = tensors["y"].to(device)
    n = y.shape[0]

    def A(x):
        return torch.einsum("nij,nj->ni", A_mat, x)

    torch.manual_seed(args.seed)
    common = dict(steps=args.steps, silent=True, device=device)
    if args.method == "ddim":
        sampler = DDIMSampler(prior, **common)
    elif args.method == "dps":
        sampler = DPSSampler(prior, y=y, A=A, zeta=1.0, **common)
    else:
        iters = 1 if args.method == "mmps1" else 3
        cov_y = IsotropicCovariance(torch.tensor(1e-4, device=device))
        post = MMPSDenoiser(prior, y=y, A=A, cov_y=cov_y, solver="cg", iterations=iters)
        sampler = DDIMSampler(post, **common)
    base = peak_rss_mib("VmRSS:")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    cpu_start = time.process_time()
    start = time.perf_counter()
    x = sampler.init((n, 5), device=device)
    x = sampler(x)
    x.sum().item()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    result = {
        "implementation": "azula",
        "method": args.method,
        "samples": n,
        "steps": args.steps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "samples_per_second": n / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "base_rss_mib": base,
        "threads": torch.get_num_threads(),
        "probe_max_abs_error": err,
        "finite": bool(torch.isfinite(x).all().item()),
    }
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
