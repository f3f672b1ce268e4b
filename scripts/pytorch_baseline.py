#!/usr/bin/env python3
"""PyTorch eager-CPU reference for SN-LeNet-5, to compare with siamese-cluster side by side.

Same model (LeNet-5 subnet, Euclidean distance, sigmoid(a d + b), the paper's contrastive loss,
Adam 1e-3), same batch (64 pairs = 128 images), real MNIST. Prints training pairs/s over a
number of steps and the time to score 10,000 test pairs (each image embedded once).

    python3 scripts/pytorch_baseline.py --data-dir ../shared/datasets/mnist --threads 1 --steps 375
"""
import argparse
import gzip
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5, padding=2)
        self.c2 = nn.Conv2d(6, 16, 5)
        self.f1, self.f2, self.f3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.relu(self.f1(x.flatten(1)))
        return self.f3(F.relu(self.f2(x)))


class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = LeNet()
        self.a = nn.Parameter(torch.tensor(-2.0))
        self.b = nn.Parameter(torch.tensor(2.0))

    def forward(self, xa, xb):
        n = xa.shape[0]
        e = self.net(torch.cat([xa, xb]))
        d = ((e[:n] - e[n:]) ** 2).sum(1).add(1e-7).sqrt()
        return torch.sigmoid(self.a * d + self.b)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=375)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(idx(f"{args.data_dir}/train-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    y = idx(f"{args.data_dir}/train-labels-idx1-ubyte.gz")
    xt = torch.from_numpy(idx(f"{args.data_dir}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    model = Siamese()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)

    def batch():
        a = rng.integers(0, len(y), 64)
        same = np.arange(64) % 2 == 0
        b = np.array([rng.choice(by_class[y[i]]) if s else rng.choice(by_class[(y[i] + 1 + rng.integers(9)) % 10])
                      for i, s in zip(a, same)])
        return x[a], x[b], torch.from_numpy(same.astype(np.float32))

    batches = [batch() for _ in range(args.steps)]
    for xa, xb, s in batches[:5]:  # warm-up
        loss = ((1 - s) * model(xa, xb) ** 2 + s * F.relu(1 - model(xa, xb)) ** 2).mean()
    start = time.perf_counter()
    for xa, xb, s in batches:
        opt.zero_grad()
        out = model(xa, xb)
        loss = ((1 - s) * out ** 2 + s * F.relu(1 - out) ** 2).mean()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - start
    print(f"pytorch {torch.__version__} threads={args.threads}: {args.steps} steps of 64 pairs in {train_s:.2f} s "
          f"= {args.steps * 64 / train_s:.0f} pairs/s ({48000 / (args.steps * 64 / train_s):.2f} s per 48,000-pair epoch)")

    partner = torch.from_numpy(rng.permutation(10000))
    with torch.no_grad():
        for _ in range(2):  # the second pass is timed, after a warm-up
            start = time.perf_counter()
            e = torch.cat([model.net(xt[i:i + 512]) for i in range(0, 10000, 512)])
            d = ((e - e[partner]) ** 2).sum(1).add(1e-7).sqrt()
            torch.sigmoid(model.a * d + model.b)
            test_s = time.perf_counter() - start
    print(f"pytorch threads={args.threads}: 10,000 test pairs scored in {test_s:.3f} s")


if __name__ == "__main__":
    main()
