# Extracts the `reconstruction_rss` slices FIRST..=LAST of every *.h5 file under ROOT (sorted by relative
# path) into CACHE/vol-NNNNN.npy (float32, [kept, H, W]) and writes CACHE/index.json. Run by diem-fastmri
# (`diem-fastmri prepare`); protocol on stdout/stderr:
#   DIEM_TOTAL n / DIEM_PROGRESS i      progress
#   DIEM_MISSING module                 a package is missing (exit 4)
#   DIEM_ERROR {"file": .., "reason": ..} a file cannot be read (exit 3)
# usage: python -c SCRIPT extract ROOT CACHE FIRST LAST MAX_VOLUMES
import json
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


def fail(path, reason):
    print("DIEM_ERROR " + json.dumps({"file": path, "reason": reason}), file=sys.stderr)
    sys.exit(3)


def atomic_save_npy(path, array):
    tmp = path + ".tmp-%d.npy" % os.getpid()
    np.save(tmp, array)
    os.replace(tmp, path)


def main():
    root, cache, first, last, max_volumes = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.endswith(".h5"):
                files.append(os.path.relpath(os.path.join(dirpath, name), root))
    files.sort()
    if max_volumes > 0:
        files = files[:max_volumes]
    os.makedirs(cache, exist_ok=True)
    print("DIEM_TOTAL %d" % len(files), flush=True)
    volumes = []
    for i, rel in enumerate(files):
        path = os.path.join(root, rel)
        try:
            with h5py.File(path, "r") as f:
                if "reconstruction_rss" not in f:
                    fail(path, "no `reconstruction_rss` dataset (found: %s)" % ", ".join(sorted(f.keys())))
                ds = f["reconstruction_rss"]
                if len(ds.shape) != 3:
                    fail(path, "`reconstruction_rss` must be [slices, H, W], got shape %s" % (list(ds.shape),))
                total = int(ds.shape[0])
                stop = min(last, total - 1)
                slices = list(range(first, stop + 1)) if stop >= first else []
                entry = {"file": rel, "total_slices": total, "slices": slices, "npy": None,
                         "shape": [len(slices), int(ds.shape[1]), int(ds.shape[2])]}
                if slices:
                    data = np.asarray(ds[first:stop + 1], dtype=np.float32)
                    npy = "vol-%05d.npy" % i
                    atomic_save_npy(os.path.join(cache, npy), np.ascontiguousarray(data))
                    entry["npy"] = npy
        except OSError as e:
            fail(path, "cannot read HDF5 file: %s" % e)
        except (KeyError, ValueError, TypeError) as e:
            fail(path, "cannot read `reconstruction_rss`: %s" % e)
        volumes.append(entry)
        print("DIEM_PROGRESS %d" % (i + 1), flush=True)
    index = {"version": 1, "root": os.path.abspath(root), "first": first, "last": last, "volumes": volumes}
    tmp = os.path.join(cache, ".index.json.tmp-%d" % os.getpid())
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, os.path.join(cache, "index.json"))


main()
