"""Reading and writing the safetensors files diem and the python sides of the benchmarks exchange.

The format is small enough to handle by hand (an 8-byte little-endian header length, a JSON header naming each
array's dtype, shape and byte range, then the raw little-endian data), so the scripts need no `safetensors`
package: only torch, which the azula side already has.
"""

import json
import os
import struct

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}


def read_safetensors(path):
    """Reads a safetensors file (header length, JSON header, raw little-endian data) into CPU tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = bytearray(body[start:end])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if end > start else torch.empty(0)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def write_safetensors(path, tensors):
    """Writes float64 tensors to a safetensors file (what diem's `Tensor::read_safetensors` reads)."""
    header, offset, chunks = {}, 0, []
    for name, t in tensors.items():
        raw = t.detach().to(torch.float64).contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)
