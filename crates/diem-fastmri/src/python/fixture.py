# Writes synthetic single-coil knee-like fastMRI files: OUT/singlecoil_train/file_NNN.h5 and (the last volume,
# when there are at least 2) OUT/singlecoil_val/file_NNN.h5, each with one dataset `reconstruction_rss`
# [slices, size, size] float32 (>= 0): ellipsoid phantoms (two bone-like ellipses inside a soft-tissue
# ellipse) with a smooth random texture and a little noise, at the magnitude of real RSS images (~1e-4).
# Protocol as extract.py (DIEM_MISSING, exit 4).
# usage: python -c SCRIPT fixture OUT VOLUMES SLICES SIZE SEED
import os
import sys

try:
    import numpy as np
except ImportError:
    print("DIEM_MISSING numpy", file=sys.stderr)
    sys.exit(4)
try:
    import h5py
except ImportError:
    print("DIEM_MISSING h5py", file=sys.stderr)
    sys.exit(4)


def phantom(rng, slices, size):
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    shapes = [(0.0, 0.0, 0.85, 0.7, 0.0, 0.5)]  # soft tissue: cy, cx, ry, rx, angle, intensity
    shapes.append((-0.35, 0.0, 0.3, 0.45, 0.0, 0.9))  # femur-like
    shapes.append((0.4, 0.05, 0.28, 0.4, 0.0, 0.8))  # tibia-like
    for _ in range(rng.integers(1, 4)):
        shapes.append((rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.05, 0.2),
                       rng.uniform(0.05, 0.2), rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3)))
    jitter = rng.normal(0.0, 0.05, size=(len(shapes), 4))
    freqs = rng.normal(0.0, 6.0, size=(6, 2))
    phases = rng.uniform(0, 2 * np.pi, size=6)
    out = np.zeros((slices, size, size), dtype=np.float64)
    for s in range(slices):
        z = (s - (slices - 1) / 2) / max(slices / 1.6, 1.0)
        taper = np.sqrt(max(1.0 - z * z, 0.05))
        img = np.zeros((size, size))
        for k, (cy, cx, ry, rx, ang, val) in enumerate(shapes):
            cy, cx = cy + jitter[k, 0], cx + jitter[k, 1]
            ry, rx = (ry + jitter[k, 2] * 0.2) * taper, (rx + jitter[k, 3] * 0.2) * taper
            c, si = np.cos(ang), np.sin(ang)
            u = ((xx - cx) * c + (yy - cy) * si) / max(rx, 1e-3)
            v = (-(xx - cx) * si + (yy - cy) * c) / max(ry, 1e-3)
            img += val * (u * u + v * v <= 1.0)
        texture = sum(np.cos(f[0] * xx + f[1] * yy + p + 0.3 * s) for f, p in zip(freqs, phases)) / 6.0
        img = img * (1.0 + 0.25 * texture) + 0.02 * np.abs(rng.normal(size=(size, size)))
        out[s] = np.abs(img)
    return out * 10 ** rng.uniform(-4.5, -3.5)


def main():
    out, volumes, slices, size, seed = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    rng = np.random.default_rng(seed)
    for v in range(volumes):
        split = "singlecoil_val" if volumes >= 2 and v == volumes - 1 else "singlecoil_train"
        folder = os.path.join(out, split)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "file_%03d.h5" % v)
        tmp = path + ".tmp-%d" % os.getpid()
        with h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction_rss", data=phantom(rng, slices, size).astype(np.float32))
            f.attrs["acquisition"] = "CORPD_FBK"
            f.attrs["patient_id"] = "synthetic-%03d" % v
        os.replace(tmp, path)
        print("DIEM_PROGRESS %d" % (v + 1), flush=True)


main()
