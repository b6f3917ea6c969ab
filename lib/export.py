"""Export a released model to ONNX, preprocessing included, checked against torch.

    python -m lib.export --onnx [--model NAME | --checkpoint CKPT] [--out models/NAME.onnx]

The ONNX graph takes what a decoder gives: `image`, uint8 (N, C, S, S) with S = the
release's img_size and C its channels (RGB order, not OpenCV's BGR), any batch size N; it
applies lib.models.preprocess (scale, channel adaptation, resize, mean/std) and returns
`logits` and `probabilities` (N, K). The classes and preprocessing ride along as ONNX
metadata (`classes` as JSON, `img_size`, `channels`, `face_crop`). The file is written
only after onnxruntime's outputs on a random batch match torch's within 1e-4.

torch >= 2.9 exports through torch.export (dynamo=True) by default, which needs the
`onnxscript` package; the TorchScript exporter (dynamo=False) needs nothing more and
handles these CNNs, so it is used here.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib import models

ATOL = 1e-4
OPSET = 17  # plain convolution / resize ops: onnxruntime 1.14 and later run it


class ExportError(ValueError):
    """The model cannot be exported, or the export does not reproduce it; nothing written."""


class WithPreprocess(nn.Module):
    """uint8 images -> (logits, probabilities): lib.models.preprocess's steps, then the model.

    The steps are written out rather than calling preprocess because its antialiased resize
    (aten::_upsample_bilinear2d_aa) has no ONNX export; for upscaling, antialiasing changes
    nothing (1e-6), so plain bilinear is used, and downscaling is refused. `verify` compares
    the ONNX outputs with lib.models.preprocess itself, so any drift shows there."""

    def __init__(self, model: nn.Module, channels: int, img_size: int):
        super().__init__()
        cfg = model.fer_cfg
        self.model, self.channels = model, channels
        c, h, w = cfg["input_size"]
        if img_size > min(h, w):
            raise ExportError(f"images of {img_size} px are downscaled to the model's {h}x{w} "
                              "with antialiasing, which does not export to ONNX")
        self.size = (h, w) if (h, w) != (img_size, img_size) else None
        if channels != c and (channels, c) not in ((1, 3), (3, 1)):
            raise ExportError(f"cannot adapt {channels} channels to {c}")
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, -1, 1, 1))
        self.register_buffer("grey", torch.tensor(models._GREY).view(1, 3, 1, 1))  # its luma
        self.c = c

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.float() / 255
        if self.channels == 1 and self.c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif self.channels == 3 and self.c == 1:
            x = (x * self.grey).sum(1, keepdim=True)
        if self.size is not None:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        z = models.logits_of(self.model((x - self.mean) / self.std))
        return z, torch.softmax(z, 1)


def reference(model: nn.Module, image: torch.Tensor) -> list[np.ndarray]:
    """(logits, probabilities) of the library's own pipeline: lib.models.preprocess + model."""
    with torch.no_grad():
        z = models.logits_of(model(models.preprocess(image, model.fer_cfg, "cpu")))
    return [z.numpy(), torch.softmax(z, 1).numpy()]


def to_onnx(model: nn.Module, meta: dict, path: str | Path, batch: int = 2) -> Path:
    """Write the ONNX file of `model` (eval, CPU) with a dynamic batch axis and metadata."""
    import onnx

    s, c = int(meta["img_size"]), int(meta["channels"])
    net = WithPreprocess(model.cpu().eval(), c, s).eval()
    x = torch.randint(0, 256, (batch, c, s, s), dtype=torch.uint8)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still supported
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["logits", "probabilities"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"},
                                        "probabilities": {0: "batch"}})
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    props = {"classes": json.dumps(list(meta["classes"])), "img_size": str(s),
             "channels": str(c), "face_crop": str(bool(meta["face_crop"])).lower(),
             "model": str(meta["model_name"]), "source": "lib.export (fer-series)"}
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))
    return Path(path)


def verify(model: nn.Module, meta: dict, path: str | Path, batch: int = 5,
           seed: int = 0) -> dict[str, float]:
    """Max abs difference of onnxruntime's outputs from torch's on a random uint8 batch
    (another batch size than the export's, so the dynamic axis is exercised too)."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    s, c = int(meta["img_size"]), int(meta["channels"])
    x = torch.randint(0, 256, (batch, c, s, s), dtype=torch.uint8, generator=g)
    want = reference(model.cpu().eval(), x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits", "probabilities"], {"image": x.numpy()})
    return {name: float(np.abs(w - o).max())
            for name, w, o in zip(("logits", "probabilities"), want, got)}


def export(checkpoint: str | Path, out: str | Path) -> dict:
    """Export, verify, and only then write `out` atomically; returns sizes and differences."""
    from lib import predict
    from lib.atomic import write_bytes

    model, meta = predict.read_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        f = to_onnx(model, meta, Path(tmp) / "model.onnx")
        diff = verify(model, meta, f)
        if max(diff.values()) > ATOL:
            raise ExportError(f"{checkpoint}: onnxruntime differs from torch by "
                              f"{max(diff.values()):.3g} (> {ATOL}); {out} not written")
        blob = f.read_bytes()
    write_bytes(out, blob)
    return {"out": str(out), "bytes": len(blob), "diff": diff, "classes": list(meta["classes"]),
            "shape": (int(meta["channels"]), int(meta["img_size"]), int(meta["img_size"]))}


def main(argv: Sequence[str] | None = None) -> int:
    from lib import predict

    ap = argparse.ArgumentParser(prog="python -m lib.export", description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", action="store_true", required=True, help="export to ONNX")
    predict.add_model_args(ap)
    ap.add_argument("--out", help="the .onnx file (default: beside the release, NAME.onnx)")
    return predict.run_main(ap, argv, _command)


def _command(args: argparse.Namespace) -> int:
    from lib import predict, release

    ckpt = predict.checkpoint_for(args.model, args.checkpoint)
    out = Path(args.out) if args.out else release.models_dir() / f"{ckpt.stem}.onnx"
    r = export(ckpt, out)
    c, s, _ = r["shape"]
    print(f"export: {ckpt} -> {r['out']} ({r['bytes'] / 2**20:.1f} MB, opset {OPSET}); input "
          f"image uint8 (N, {c}, {s}, {s}), outputs logits and probabilities over "
          f"{len(r['classes'])} classes; onnxruntime vs torch on a random batch of 5: max abs "
          f"diff {r['diff']['logits']:.2e} (logits), {r['diff']['probabilities']:.2e} "
          f"(probabilities), within {ATOL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
