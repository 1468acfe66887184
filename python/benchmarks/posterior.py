"""`cargo xtask bench python`: posterior sampling from Python with one PyTorch module, diem.posterior against
azula 0.11.1's MMPS, same steps, same machine, interleaved runs (each in its own process): samples/s and peak
memory.

The module is the manifold experiment's denoiser (docs/method.md §9a): EDM preconditioning around an MLP
5 → (256, 256, 256) → 5 with a sine embedding of ln σ, randomly initialized with a fixed seed (the speed of
a sampler does not depend on what the weights learned). Observations: N samples seen through their own
random 2×5 projections with σ_y = 0.01. Both sides run DDIM on the VE schedule σ ∈ [1e-3, 1e1] with T steps,
MMPS with the Tweedie covariance and 1 CG iteration (one VJP through the module per step).

    python posterior.py [--samples 8192 256] [--steps 64] [--repeat 3] [--threads 2] [--out report.md]
    python posterior.py --side diem|azula --n N --steps T   (one timed run, one JSON line)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch


class EdmMlp(torch.nn.Module):
    """d(x_t, σ) = c_skip x_t + c_out F(c_in x_t, emb(ln σ)): the manifold denoiser's architecture."""

    def __init__(self, features=5, hidden=(256, 256, 256), embedding=64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        dims = [features + embedding, *hidden]
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.output = torch.nn.Linear(dims[-1], features)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))
        k = embedding // 2
        self.register_buffer("freqs", torch.tensor([1e-4 ** (j / (k - 1)) for j in range(k)]))
        self.requires_grad_(False)

    def forward(self, x_t, sigma):
        sigma = sigma.to(x_t.dtype).reshape(-1, 1).expand(x_t.shape[0], 1)
        s2p1 = sigma**2 + 1
        c_skip, c_in = 1 / s2p1, torch.rsqrt(s2p1)
        c_out = sigma * c_in
        angles = torch.log(sigma) * self.freqs
        h = torch.cat([x_t * c_in, torch.sin(angles), torch.cos(angles)], dim=-1)
        for layer in self.hidden:
            h = torch.nn.functional.layer_norm(torch.nn.functional.silu(layer(h)), (layer.out_features,))
        return c_skip * x_t + c_out * self.output(h)


def problem(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 2, 5, generator=g)
    a = a / a.norm(dim=-1, keepdim=True)
    x = torch.randn(n, 5, generator=g).clamp(-2, 2)
    y = torch.einsum("nij,nj->ni", a, x) + 0.01 * torch.randn(n, 2, generator=g)
    return a, y


def peak_rss_mib(field="VmHWM:"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return None


def run_one(side, n, steps, threads):
    torch.set_num_threads(threads)
    module = EdmMlp()
    a, y = problem(n)
    if side == "diem":
        import diem

        obs = diem.Observations(y, diem.ops.Projection(a), 0.01)
        run = lambda: diem.posterior(module, obs, method="mmps", sampler="ddim", steps=steps,  # noqa: E731
                                     solver="cg", iterations=1, sigma_min=1e-3, sigma_max=1e1, seed=0)
    else:
        from azula.denoise import Denoiser, DiracPosterior
        from azula.guidance import MMPSDenoiser
        from azula.linalg.covariance import IsotropicCovariance
        from azula.noise import VESchedule
        from azula.sample import DDIMSampler

        schedule = VESchedule(sigma_min=1e-3, sigma_max=1e1)

        class Prior(Denoiser):
            def __init__(self):
                super().__init__()
                self.net = module
                self.schedule = schedule

            def forward(self, x_t, t, **kwargs):
                _, sigma_t = self.schedule(t)
                return DiracPosterior(mean=self.net(x_t, sigma_t))

        def A(x):
            return torch.einsum("nij,nj->ni", a, x)

        post = MMPSDenoiser(Prior(), y=y, A=A, cov_y=IsotropicCovariance(torch.tensor(1e-4)), solver="cg",
                            iterations=1)
        sampler = DDIMSampler(post, steps=steps, silent=True)
        torch.manual_seed(0)

        def run():
            return sampler(sampler.init((n, 5)))

    start = time.perf_counter()
    x = run()
    seconds = time.perf_counter() - start
    print(json.dumps({"side": side, "n": n, "steps": steps, "seconds": seconds, "samples_per_second": n / seconds,
                      "peak_rss_mib": peak_rss_mib(), "finite": bool(torch.isfinite(torch.as_tensor(x)).all())}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=["diem", "azula"])
    p.add_argument("--n", type=int)
    p.add_argument("--samples", type=int, nargs="+", default=[8192, 256])
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out")
    args = p.parse_args()
    if args.side:
        run_one(args.side, args.n, args.steps, args.threads)
        return
    import azula
    import diem  # noqa: F401  (fail early if the wheel is missing)

    rows = []
    for n in args.samples:
        runs = {"diem": [], "azula": []}
        for r in range(args.repeat):
            order = ["diem", "azula"] if r % 2 == 0 else ["azula", "diem"]
            for side in order:
                out = subprocess.run([sys.executable, __file__, "--side", side, "--n", str(n), "--steps",
                                      str(args.steps), "--threads", str(args.threads)],
                                     check=True, capture_output=True, text=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                assert res["finite"], res
                runs[side].append(res)
                print(f"N = {n}, run {r + 1}: {side} {res['samples_per_second']:.0f} samples/s, "
                      f"peak RSS {res['peak_rss_mib']:.0f} MiB", file=sys.stderr)
        med = {s: statistics.median(x["samples_per_second"] for x in v) for s, v in runs.items()}
        mem = {s: statistics.median(x["peak_rss_mib"] for x in v) for s, v in runs.items()}
        rows.append((n, med, mem, runs))
    lines = [
        f"diem.posterior vs azula {azula.__version__} MMPS (CG 1, DDIM {args.steps} steps, the same torch module), "
        f"torch {torch.__version__}, {args.threads} threads, median of {args.repeat} interleaved runs "
        f"(each in its own process)",
        "",
        "| N | diem samples/s | azula samples/s | diem / azula | diem peak RSS (MiB) | azula peak RSS (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, med, mem, _ in rows:
        lines.append(f"| {n} | {med['diem']:.0f} | {med['azula']:.0f} | {med['diem'] / med['azula']:.2f}× | "
                     f"{mem['diem']:.0f} | {mem['azula']:.0f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)


if __name__ == "__main__":
    main()
