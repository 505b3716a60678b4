"""The tracer on a real GPU training loop: a 4-worker DataLoader over 16,384 small files.

Goal (issue 3): ≤ 1.05× bare. Needs PyTorch and a CUDA device; prints "skipped" otherwise.
Run on a GPU machine from the repo root (only the standard library and roargit.trace are
imported, so no install is needed there):

    cc -O2 -std=gnu11 -o roargit/_bin/roar-trace roargit/tracer/roar-trace.c
    cc -O2 -std=gnu11 -shared -fPIC -o roargit/_bin/roar-shim.so roargit/tracer/roar-shim.c -ldl
    python3 -m benchmarks gpu
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES = 16_384
EPOCHS = int(os.environ.get("ROAR_GPU_EPOCHS", "4"))
ROUNDS = int(os.environ.get("ROAR_GPU_ROUNDS", "3"))

TRAIN = r"""
import os, sys, torch, torch.nn as nn
from torch.utils.data import DataLoader, Dataset

class Files(Dataset):
    def __init__(self, root):
        self.paths = sorted(os.path.join(root, n) for n in os.listdir(root))
    def __len__(self):
        return len(self.paths)
    def __getitem__(self, i):
        with open(self.paths[i], "rb") as f:
            raw = f.read()
        x = torch.frombuffer(bytearray(raw[1:]), dtype=torch.uint8).view(3, 32, 32).float() / 255
        return x, raw[0] % 10

def main():
    root, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10),
    ).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(Files(root), batch_size=128, shuffle=True, num_workers=4,
                        persistent_workers=False)
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    torch.cuda.synchronize()
    torch.save(model.state_dict(), out)

main()
"""


def make_dataset(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = os.urandom
    for i in range(FILES):
        (root / f"img{i:05d}.bin").write_bytes(bytes([i % 256]) + rng(3 * 32 * 32))


def main() -> None:
    try:
        import torch

        if not torch.cuda.is_available():
            print("skipped: no CUDA device")
            return
        gpu = torch.cuda.get_device_name(0)
    except ImportError:
        print("skipped: PyTorch is not installed")
        return
    from roargit.trace import run_traced

    tmp = Path(tempfile.mkdtemp(prefix="roar-gpu-"))
    data = tmp / "data"
    make_dataset(data)
    script = tmp / "train.py"
    script.write_text(TRAIN)
    argv = [sys.executable, str(script), str(data), str(tmp / "model.pt"), str(EPOCHS)]
    subprocess.run(argv, check=True)  # warm-up: CUDA init, page cache
    bare: list[float] = []
    traced: list[float] = []
    seen = 0
    for _ in range(ROUNDS):
        t = time.perf_counter()
        subprocess.run(argv, check=True)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        trace = run_traced(argv, tmp)
        traced.append(time.perf_counter() - t)
        assert trace.exit_code == 0, trace
        seen = sum(1 for p in trace.files if p.startswith(str(data) + "/"))
    b, r = statistics.median(bare), statistics.median(traced)
    print(f"GPU: {gpu}; {FILES:,} files, 4 DataLoader workers, {EPOCHS} epochs, {ROUNDS} rounds")
    print(f"bare    median {b:7.2f} s  (all: {', '.join(f'{x:.2f}' for x in bare)})")
    print(
        f"traced  median {r:7.2f} s  (all: {', '.join(f'{x:.2f}' for x in traced)})  "
        f"{r / b:.3f}x bare   goal <= 1.05x   {'ok' if r / b <= 1.05 else 'MISSED'}"
    )
    print(f"files of the dataset seen by the tracer: {seen:,} of {FILES:,}; mode {trace.mode}")


if __name__ == "__main__":
    main()
