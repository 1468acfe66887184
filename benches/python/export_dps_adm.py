"""Export the DPS FFHQ-256 ADM prior to the TorchScript layout `inverse_bench --prior DIR` reads.

Run from the root of the DPS repository (github.com/DPS2022/diffusion-posterior-sampling), whose
`guided_diffusion` package builds the network, with `ffhq_10m.pt` downloaded:

    python /path/to/diem/benches/python/export_dps_adm.py --checkpoint models/ffhq_10m.pt --out priors/ffhq-adm

Writes `OUT/model.pt` (forward(x [N,3,256,256] float32, t [N] int64) -> [N,6,256,256], the first 3 channels
being the predicted noise) and `OUT/prior.json` (linear beta 1e-4..0.02 over 1000 steps, clip x0 to [-1, 1]).
The network settings are those of DPS's `configs/model_config.yaml`.
"""

import argparse
import json
import os

import torch

from guided_diffusion.unet import create_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="ffhq_10m.pt from the DPS release")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="cpu", help="device used for tracing (cpu or cuda)")
    args = parser.parse_args()

    model = create_model(
        image_size=256,
        num_channels=128,
        num_res_blocks=1,
        channel_mult="",
        learn_sigma=True,
        class_cond=False,
        use_checkpoint=False,
        attention_resolutions="16",
        num_heads=4,
        num_head_channels=64,
        num_heads_upsample=-1,
        use_scale_shift_norm=True,
        dropout=0.0,
        resblock_updown=True,
        use_fp16=False,
        use_new_attention_order=False,
        model_path=args.checkpoint,
    )
    model = model.to(args.device).eval()

    class Eps(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return self.net(x, t)

    wrapped = Eps(model).eval()
    x = torch.randn(1, 3, 256, 256, device=args.device)
    t = torch.tensor([500], dtype=torch.int64, device=args.device)
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, (x, t), check_trace=False)
        reference = wrapped(x, t)
        err = (traced(x, t) - reference).abs().max().item()
    if err > 1e-4:
        raise SystemExit(f"traced module differs from the eager one by {err}")
    os.makedirs(args.out, exist_ok=True)
    traced.save(os.path.join(args.out, "model.pt"))
    prior = {
        "kind": "vp-eps",
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "timesteps": 1000,
        "clip": True,
        "out_channels": int(reference.shape[1]),
    }
    with open(os.path.join(args.out, "prior.json"), "w") as f:
        json.dump(prior, f, indent=2)
    print(f"wrote {args.out}/model.pt and prior.json (max trace error {err:.2e})")


if __name__ == "__main__":
    main()
