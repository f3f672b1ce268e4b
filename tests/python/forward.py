"""An independent SN-LeNet-5 forward pass in numpy, from a checkpoint's documented tensor names
(docs/operations.md, "Checkpoint layout"), compared with the project's `coordinator embed`.

Usage: forward.py WEIGHTS.safetensors IDX_IMAGES(.gz) FIRST COUNT RUST_EMBEDDINGS.npy
Prints one JSON object: images, width, max_abs_diff, max_similarity_diff.
"""

import gzip
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def idx_images(path, first, count):
    """Images FIRST..FIRST+COUNT of an IDX image file as float64 in [0, 1], shape [n, 1, h, w]."""
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    assert magic == 0x803, hex(magic)
    pixels = np.frombuffer(data[16:], dtype=np.uint8).reshape(n, 1, rows, cols)
    # The model's input: byte / 255 in float32 (docs/spec.md, 1.1).
    return (pixels[first:first + count].astype(np.float32) / np.float32(255)).astype(np.float64)


def conv_relu_pool(x, w, b, pad):
    """conv (stride 1, zero padding) -> bias -> ReLU -> 2x2 max-pool, stride 2."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    y = np.einsum("ncijkl,ockl->noij", windows, w) + b[None, :, None, None]
    y = np.maximum(y, 0.0)
    n, o, h, wd = y.shape
    return y[:, :, : h // 2 * 2, : wd // 2 * 2].reshape(n, o, h // 2, 2, wd // 2, 2).max(axis=(3, 5))


def embed(t, x):
    """The subnet: two conv stages, fc1 and fc2 with ReLU, fc3 without its bias (unused)."""
    pad = 2 if x.shape[2] == 28 else 0
    h = conv_relu_pool(x, t["conv1.weight"], t["conv1.bias"], pad)
    h = conv_relu_pool(h, t["conv2.weight"], t["conv2.bias"], 0)
    h = h.reshape(h.shape[0], -1)
    h = np.maximum(h @ t["fc1.weight"].T + t["fc1.bias"], 0.0)
    h = np.maximum(h @ t["fc2.weight"].T + t["fc2.bias"], 0.0)
    return h @ t["fc3.weight"].T


def similarity(t, ea, eb):
    """s = sigmoid(a d + b), d = sqrt(|ea - eb|^2 + 1e-7)."""
    d = np.sqrt(((ea - eb) ** 2).sum(axis=1) + 1e-7)
    z = t["out.weight"][0] * d + t["out.bias"][0]
    return 1.0 / (1.0 + np.exp(-z))


def main():
    weights, images, first, count, rust_npy = sys.argv[1:6]
    t = {k: v.astype(np.float64) for k, v in load_file(weights).items() if not k.startswith("adam.")}
    x = idx_images(images, int(first), int(count))
    ours = embed(t, x)
    theirs = np.load(rust_npy).astype(np.float64)
    assert theirs.shape == ours.shape, (theirs.shape, ours.shape)
    # Pairs (0, 1), (2, 3), ...: the similarity from both sets of embeddings.
    s_ours = similarity(t, ours[0::2], ours[1::2])
    s_theirs = similarity(t, theirs[0::2], theirs[1::2])
    print(json.dumps({
        "images": int(ours.shape[0]),
        "width": int(ours.shape[1]),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "max_similarity_diff": float(np.abs(s_ours - s_theirs).max()),
    }))


if __name__ == "__main__":
    main()
