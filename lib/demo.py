"""Emotions on video: the released model on each frame, faces boxed and labelled.

    python -m lib.demo --video clip.mp4 [--model NAME | --checkpoint CKPT] [--out annotated.mp4]
                       [--every K] [--max-frames N] [--faces all|largest] [--show] [--debug]
    python -m lib.demo --camera 0 --show

Every K-th frame is analysed (faces by lib.predict.detect_faces, each crop classified as
lib.predict does); the frames between keep the last boxes, so the labels do not flicker.
`--out` writes the annotated video (mp4v for .mp4, MJPG for .avi). A window opens only with
`--show`, and only where there is a display and an OpenCV with a GUI (the project installs
opencv-python-headless: write --out there). Ctrl-C (or q in the window) stops and keeps
what was written.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GREEN, BLACK, ORANGE = (80, 200, 80), (0, 0, 0), (0, 160, 255)  # BGR
WINDOW = "lib.demo (q quits)"
WORK_SIDE = 320  # detection side for video: as lib.data.faces (fast), faces are large in a webcam


def open_capture(video: str | None = None, camera: int | None = None):
    """A cv2.VideoCapture on a file or a camera index; a clear error when it cannot open."""
    import cv2

    if video is not None:
        if not Path(video).is_file():
            raise FileNotFoundError(f"video {video}: no such file")
        cap = cv2.VideoCapture(str(video))
        what = f"video {video}"
    elif camera is not None:
        cap = cv2.VideoCapture(int(camera))
        what = f"camera {camera}"
    else:
        raise ValueError("give --video FILE or --camera INDEX")
    if not cap.isOpened():
        raise OSError(f"{what}: OpenCV cannot open it (not a video, or no such device)")
    return cap


def open_writer(out: str | Path, fps: float, size: tuple[int, int]):
    """A cv2.VideoWriter for `out` (codec by extension); a clear error when it cannot."""
    import cv2

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    codec = "MJPG" if out.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        raise OSError(f"{out}: OpenCV cannot write {codec} video here (try .avi)")
    return writer


def analyse(frame: np.ndarray, model, meta: dict, largest_only: bool = False
            ) -> list[tuple[tuple[int, int, int, int], str, float]]:
    """(box, emotion, confidence) per face in a BGR frame."""
    from PIL import Image

    from lib.data import imageio
    from lib import predict

    img = imageio.to_mode(Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1])),
                          int(meta["channels"]))
    boxes, crops = predict.face_crops(img, meta, largest_only, WORK_SIDE)
    if not crops:
        return []
    probs = predict.classify(model, crops)
    classes = list(meta["classes"])
    return [(b, classes[int(p.argmax())], float(p.max())) for b, p in zip(boxes, probs)]


def draw(frame: np.ndarray, found: list) -> np.ndarray:
    """Boxes and 'emotion 0.87' labels drawn on the frame in place; 'no face' when none."""
    import cv2

    scale = max(0.4, frame.shape[1] / 900)
    thick = max(1, round(scale * 2))
    if not found:
        cv2.putText(frame, "no face", (8, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, ORANGE, thick, cv2.LINE_AA)
    for (x, y, w, h), emotion, conf in found:
        cv2.rectangle(frame, (x, y), (x + w, y + h), GREEN, thick)
        text = f"{emotion} {conf:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = max(0, y - th - base - 4)  # above the box, or inside it at the frame's top
        cv2.rectangle(frame, (x, top), (x + tw + 4, top + th + base + 4), GREEN, -1)
        cv2.putText(frame, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    BLACK, thick, cv2.LINE_AA)
    return frame


def _can_show() -> None:
    """Refuse --show where no window can open, before reading any frame."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        raise OSError("--show needs a display (none here: DISPLAY is not set); use --out FILE")
    try:
        cv2.namedWindow(WINDOW)
    except cv2.error:  # "The function is not implemented": a build without highgui
        raise OSError("--show: this OpenCV has no GUI (opencv-python-headless); "
                      "use --out FILE") from None


def run(checkpoint: str | Path, video: str | None = None, camera: int | None = None,
        out: str | Path | None = None, every: int = 1, max_frames: int | None = None,
        largest_only: bool = False, show: bool = False) -> dict:
    """Annotate frames from a file or camera; returns counts and timings."""
    import cv2

    from lib import config, predict

    if every < 1:
        raise ValueError(f"--every must be at least 1, not {every}")
    if show:
        _can_show()
    model, meta = predict.read_checkpoint(checkpoint, device=config.device())
    cap = open_capture(video, camera)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer, found, stats = None, [], {"frames": 0, "analysed": 0, "faces": 0, "no_face": 0}
    t0 = time.perf_counter()
    try:
        while max_frames is None or stats["frames"] < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if stats["frames"] % every == 0:
                found = analyse(frame, model, meta, largest_only)
                stats["analysed"] += 1
                stats["faces"] += len(found)
                stats["no_face"] += not found
            draw(frame, found)
            stats["frames"] += 1
            if out is not None:
                writer = writer or open_writer(out, fps, (frame.shape[1], frame.shape[0]))
                writer.write(frame)
            if show:
                cv2.imshow(WINDOW, frame)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
    except KeyboardInterrupt:  # a camera runs until stopped: keep what was written
        pass
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    stats["seconds"] = time.perf_counter() - t0
    stats["out"] = str(out) if writer is not None else None
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    from lib import predict

    ap = argparse.ArgumentParser(prog="python -m lib.demo", description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="a video file")
    src.add_argument("--camera", type=int, help="a camera index (0 = the first)")
    predict.add_model_args(ap)
    ap.add_argument("--out", help="write the annotated video here (.mp4 or .avi)")
    ap.add_argument("--every", type=int, default=1, help="analyse every K-th frame")
    ap.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    ap.add_argument("--faces", choices=["all", "largest"], default="all")
    ap.add_argument("--show", action="store_true", help="show a window (needs a display)")
    return predict.run_main(ap, argv, _command)


def _command(args: argparse.Namespace) -> int:
    from lib import predict

    ckpt = predict.checkpoint_for(args.model, args.checkpoint)
    s = run(ckpt, args.video, args.camera, args.out, args.every, args.max_frames,
            args.faces == "largest", args.show)
    rate = s["frames"] / max(s["seconds"], 1e-9)
    print(f"demo: model {ckpt}; {s['frames']} frame(s), {s['analysed']} analysed, "
          f"{s['faces']} face(s) classified, {s['no_face']} analysed frame(s) without a face; "
          f"{s['seconds']:.1f} s ({rate:.1f} frames/s)"
          + (f"; wrote {s['out']}" if s["out"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
