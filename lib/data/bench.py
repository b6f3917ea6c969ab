"""`python -m lib.bench data`: the decode-once tensor cache against decoding with PIL every epoch.

For each dataset: seconds to build the cache (decode every file once and save it), one
shuffled epoch of batches of 64 served from the cache (best of 3; also with one torch
thread, which wins on a busy 2-core machine), and one epoch the usual torchvision
ImageFolder way (PIL open + Resize + CenterCrop in a DataLoader with 2 workers), and their ratio.
"""
from __future__ import annotations

import os
import tempfile
import time

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from lib import data
from lib.data import imageio

CASES = (("fer2013", 48, 1), ("six_emotions", 96, 3))
BATCH = 64


class PILFolder(Dataset):
    """What torchvision's ImageFolder + transforms does: decode with PIL on every access."""

    def __init__(self, rows: pd.DataFrame, size: int, channels: int):
        from torchvision import transforms

        self.paths, self.channels = rows["path"].tolist(), channels
        classes = sorted(rows["label"].unique())
        self.y = [classes.index(c) for c in rows["label"]]
        self.tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                      transforms.PILToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            img = imageio.to_mode(img, self.channels)  # also composites RGBA, as the cache does
            return self.tf(img), self.y[i]


def _epoch_cache(ds: data.ImageTensors) -> float:
    t0 = time.perf_counter()
    order = torch.randperm(len(ds))
    for i in range(0, len(ds), BATCH):
        idx = order[i:i + BATCH]
        x, y = ds.images[idx].float().div_(255), ds.labels[idx]
    return time.perf_counter() - t0


def _epoch_pil(rows: pd.DataFrame, size: int, channels: int, workers: int = 2) -> float:
    loader = DataLoader(PILFolder(rows, size, channels), batch_size=BATCH, shuffle=True,
                        num_workers=workers, persistent_workers=False)
    t0 = time.perf_counter()
    for x, y in loader:
        x = x.float().div_(255)
    return time.perf_counter() - t0


def bench_one(name: str, size: int, channels: int) -> dict:
    m = data.load_manifest(name)
    rows = m[m["label"].notna() & ~m["missing_file"] & ~m["dup_label_row"]]
    old = os.environ.get("FER_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as tmp:
        os.environ["FER_CACHE_DIR"] = tmp  # a cold cache, and nothing left behind
        try:
            t0 = time.perf_counter()
            data.ImageTensors(rows, size, channels, progress=False)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            ds = data.ImageTensors(rows, size, channels, progress=False)
            load = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("FER_CACHE_DIR", None)
            else:
                os.environ["FER_CACHE_DIR"] = old
        cache_epoch = min(_epoch_cache(ds) for _ in range(3))  # best of 3: the machine is shared
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small batch ops: OpenMP threads can lose to contention
        try:
            cache_epoch_1t = min(_epoch_cache(ds) for _ in range(3))
        finally:
            torch.set_num_threads(threads)
    pil_epoch = _epoch_pil(ds.rows, size, channels)
    return dict(dataset=name, size=size, channels=channels, images=len(ds),
                cache_build_s=round(build, 2), cache_load_s=round(load, 3),
                epoch_cache_s=round(cache_epoch, 3), epoch_cache_1thread_s=round(cache_epoch_1t, 3),
                epoch_pil_s=round(pil_epoch, 2),
                pil_over_cache=round(pil_epoch / max(cache_epoch, 1e-9), 1),
                pil_over_cache_1thread=round(pil_epoch / max(cache_epoch_1t, 1e-9), 1))


def run_data_bench(cases=CASES) -> pd.DataFrame:
    """Run every case whose dataset is present and print the table; returns it."""
    out = []
    for name, size, channels in cases:
        try:
            out.append(bench_one(name, size, channels))
        except data.DatasetNotFound as e:
            print(f"skipping {name}: {e}")
    table = pd.DataFrame(out)
    print(f"data bench (batch {BATCH}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores)")
    print(table.to_string(index=False) if len(table) else "no dataset found")
    return table


if __name__ == "__main__":
    run_data_bench()
