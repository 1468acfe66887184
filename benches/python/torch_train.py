"""The PyTorch side of `cargo xtask bench train`: one M-step training step of diem's networks, rebuilt in plain
PyTorch, timed per step. Prints one JSON line.

The networks, the loss and the optimizer replicate diem's exactly (crates/diem-models: mlp.rs, unet/, edm.rs,
train/mod.rs; docs/method.md §3.1-§3.3, §8, §9a-§9b):

- EDM preconditioning with sigma_data = 1 and c_noise = ln(sigma) (no factor 1/4):
  d(x_t, s) = c_skip x_t + c_out F(c_in x_t, emb(ln s)), c_skip = 1/(s^2+1), c_in = 1/sqrt(s^2+1), c_out = s c_in;
- the sinusoidal embedding [sin(w_k c), cos(w_k c)], w_k = 1e-4^(k/(K-1));
- the DSM loss  L = mean_b lambda(s_b) mean_j (d(x_b + s_b z_b, s_b)_j - x_bj)^2, lambda(s) = 1/s^2 + 1, with
  t ~ Beta(a, b) drawn as G_a / (G_a + G_b) from two standard-gamma draws, s = exp(ln a_s + (ln b_s - ln a_s) t);
- global-norm clipping to `clip` (coef = min(clip / (norm + 1e-6), 1)), then Adam (beta 0.9, 0.999, eps 1e-8).

Threads: `torch.set_num_threads(--threads)`, as diem's side sets libtorch's intra-op threads.
"""

import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Linear(nn.Module):
    """y = x W^T + b with W ~ U(+-scale/sqrt(fan_in)), b = 0 (diem's layers.rs)."""

    def __init__(self, fan_in, fan_out, bias=True, scale=1.0):
        super().__init__()
        bound = scale / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Conv2d(nn.Module):
    """A "same" convolution with weights U(+-1/sqrt(k^2 C_in)) and zero bias (diem's layers.rs)."""

    def __init__(self, c_in, c_out, k, stride=1):
        super().__init__()
        bound = 1.0 / math.sqrt(k * k * c_in)
        self.weight = nn.Parameter(torch.empty(c_out, c_in, k, k).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.stride, self.padding = stride, (k - 1) // 2

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def layer_norm_last(x):
    return F.layer_norm(x, (x.shape[-1],), None, None, 1e-5)


def layer_norm_channels(x):
    var, mean = torch.var_mean(x, dim=1, correction=0, keepdim=True)
    return (x - mean) * (var + 1e-5).rsqrt()


class Mlp(nn.Module):
    """diem's manifold MLP: [u, e] -> (Linear, SiLU, LayerNorm without affine) per hidden size -> Linear."""

    def __init__(self, features, hidden, emb):
        super().__init__()
        self.emb = emb
        sizes = [features + emb] + list(hidden)
        self.hidden = nn.ModuleList(Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = Linear(sizes[-1], features)

    def forward(self, u, e):
        h = torch.cat([u, e.to(u.dtype)], -1)
        for layer in self.hidden:
            h = layer_norm_last(F.silu(layer(h)))
        return self.output(h)


class Modulation(nn.Module):
    def __init__(self, emb, c):
        super().__init__()
        self.hidden = Linear(emb, emb)
        self.output = Linear(emb, 3 * c, scale=0.1)

    def forward(self, e):
        m = self.output(F.silu(self.hidden(e)))[:, :, None, None]
        return m.chunk(3, 1)


def gated_residual(x, c, h):
    return (x + c * h) / (c * c + 1.0).sqrt()


class ResBlock(nn.Module):
    def __init__(self, c, emb, k, dropout):
        super().__init__()
        self.modulation = Modulation(emb, c)
        self.conv1, self.conv2 = Conv2d(c, c, k), Conv2d(c, c, k)
        self.dropout = dropout

    def forward(self, x, e):
        a, b, c = self.modulation(e)
        h = layer_norm_channels((a + 1.0) * x + b)
        h = F.silu(self.conv1(h))
        if self.dropout > 0:
            h = F.dropout(h, self.dropout, self.training)
        return gated_residual(x, c, self.conv2(h))


class AttBlock(nn.Module):
    def __init__(self, c, emb, heads):
        super().__init__()
        self.modulation = Modulation(emb, c)
        self.q, self.k, self.v = Linear(c, c), Linear(c, c), Linear(c, c)
        self.out = Linear(c, c, bias=False)
        self.heads = heads

    def forward(self, x, e):
        n, ch, hh, ww = x.shape
        a, b, c = self.modulation(e)
        h = layer_norm_channels((a + 1.0) * x + b)
        tokens = h.flatten(2, 3).transpose(1, 2)
        d = ch // self.heads

        def split(t):
            return t.reshape(n, hh * ww, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(tokens)), split(self.k(tokens)), split(self.v(tokens))
        att = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(d))
        merged = att.transpose(1, 2).reshape(n, hh * ww, ch)
        h = self.out(merged).transpose(1, 2).reshape(n, ch, hh, ww)
        return gated_residual(x, c, h)


class LevelBlock(nn.Module):
    def __init__(self, c, emb, k, dropout, heads):
        super().__init__()
        self.res = ResBlock(c, emb, k, dropout)
        self.att = AttBlock(c, emb, heads) if heads > 0 else None

    def forward(self, x, e):
        x = self.res(x, e)
        return self.att(x, e) if self.att is not None else x


class UNet(nn.Module):
    """diem's U-Net (unet/mod.rs) without space-to-depth (patch size 1)."""

    def __init__(self, cfg):
        super().__init__()
        ch, blocks, heads = cfg["channels"], cfg["blocks"], cfg["heads"]
        k, emb, p = cfg["kernel_size"], cfg["embedding_features"], cfg["dropout"]
        self.emb = emb
        self.down, self.down_blocks, self.up, self.up_blocks = (nn.ModuleList() for _ in range(4))
        n = len(ch)
        for i in range(n):
            self.down.append(Conv2d(cfg["in_channels"] if i == 0 else ch[i - 1], ch[i], k, 1 if i == 0 else 2))
            self.down_blocks.append(nn.ModuleList(LevelBlock(ch[i], emb, k, p, heads[i]) for _ in range(blocks[i])))
            self.up.append(Conv2d(ch[i] + ch[i + 1], ch[i], k) if i + 1 < n else nn.Identity())
            self.up_blocks.append(nn.ModuleList(LevelBlock(ch[i], emb, k, p, heads[i]) for _ in range(blocks[i])))
        self.output = Conv2d(ch[0], cfg["out_channels"], 1)

    def forward(self, u, e):
        e = e.to(u.dtype)
        x, skips = u, []
        for i in range(len(self.down)):
            x = self.down[i](x)
            if i > 0:
                x = layer_norm_channels(x)
            for blk in self.down_blocks[i]:
                x = blk(x, e)
            skips.append(x)
        for i in reversed(range(len(self.down))):
            skip = skips.pop()
            if i + 1 < len(self.down):
                x = self.up[i](torch.cat([x, skip], 1))
            for blk in self.up_blocks[i]:
                x = blk(x, e)
            if i > 0:
                x = F.interpolate(layer_norm_channels(x), scale_factor=2, mode="nearest")
        return self.output(x)


def embedding(c, features):
    k = features // 2
    w = [1.0 if i == 0 else 1e-4 if i == k - 1 else 1e-4 ** (i / (k - 1)) for i in range(k)]
    w = torch.tensor(w, dtype=torch.float64).to(c.dtype)
    angles = c[:, None] * w
    return torch.cat([angles.sin(), angles.cos()], -1)


def edm_loss(net, x, sigma, z):
    """diem's EdmDenoiser::loss (edm.rs)."""
    shape = [-1] + [1] * (x.dim() - 1)
    s = sigma.reshape(shape)
    x_t = x + s * z
    s2p1 = s * s + 1.0
    c_skip, c_in = s2p1.reciprocal(), s2p1.rsqrt()
    c_out = s * c_in
    emb = embedding(sigma.log(), net.emb)
    d = c_skip * x_t + c_out * net(x_t * c_in, emb)
    per_sample = (d - x).square().flatten(1).mean(1)
    weight = sigma.square().reciprocal() + 1.0
    return (per_sample * weight).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", choices=["mlp", "unet"], required=True)
    ap.add_argument("--json", help="the network's configuration (as diem's config JSON)")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--image", type=int, default=32, help="image side for the U-Net")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--schedule", type=float, nargs=2, default=[1e-3, 1e1])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--adam", choices=["default", "foreach", "fused"], default="default",
                    help="torch.optim.Adam's implementation (default: PyTorch's choice, the for-loop on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = json.loads(args.json)
    if args.net == "mlp":
        net = Mlp(cfg["features"], cfg["hidden"], cfg["embedding_features"])
        data = torch.randn(4096, cfg["features"])
    else:
        net = UNet(cfg)
        data = torch.randn(max(4 * args.batch, 256), cfg["in_channels"], args.image, args.image)
    net.train()
    params = [p for p in net.parameters()]
    count = sum(p.numel() for p in params)
    kw = {} if args.adam == "default" else {args.adam: True}
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw)
    log_a, log_ratio = math.log(args.schedule[0]), math.log(args.schedule[1]) - math.log(args.schedule[0])
    ga = torch.full([args.batch], 3.0)
    gb = torch.full([args.batch], 3.0)

    def step(i, total):
        # The linearly decaying learning rate of the manifold M-step (lr 1e-3 -> 1e-6), set every step as diem
        # (LrConfig::at: progress = min((step + 1) / (total + 1), 1)).
        for g in opt.param_groups:
            g["lr"] = args.lr + (1e-6 - args.lr) * min((i + 1) / (total + 1), 1.0)
        opt.zero_grad(set_to_none=True)
        idx = torch.randint(data.shape[0], [args.batch])
        x = data.index_select(0, idx)
        a, b = torch._standard_gamma(ga), torch._standard_gamma(gb)
        t = a / (a + b)
        sigma = (t * log_ratio + log_a).exp()
        z = torch.randn_like(x)
        loss = edm_loss(net, x, sigma, z)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        return loss.detach(), norm

    for i in range(args.warmup):
        step(i, args.warmup)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    losses = []
    for i in range(args.steps):
        losses.append(step(i, args.steps)[0])
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    print(json.dumps({
        "impl": "pytorch-" + args.adam,
        "net": args.net,
        "parameters": count,
        "param_tensors": len(params),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "steps": args.steps,
        "seconds": seconds,
        "ms_per_step": 1e3 * seconds / args.steps,
        "cpu_seconds": cpu,
        "finite": finite,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
