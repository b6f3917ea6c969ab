"""Small fake datasets in every layout lib.data reads, written into a temporary folder.

Images are tiny and class-dependent (an oriented grating per class plus noise), so a small
model can learn them; notebook tests use `make_image_folder_dataset` and `make_data_root`.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def pattern(cls_index: int, n_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size uint8 image: a grating whose orientation encodes the class, plus noise."""
    angle = np.pi * cls_index / max(n_classes, 1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    wave = np.sin(2 * np.pi * 3 * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 6.3))
    cy, cx = rng.uniform(0.2, 0.8, 2)  # a random soft blob: each image distinct (hashes differ)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02) * rng.choice([-70, 70])
    img = 128 + 60 * wave + blob + rng.normal(0, 15, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(img: np.ndarray, file: Path, rgb: bool = False) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img, "L")
    (im.convert("RGB") if rgb else im).save(file)
    return file


def make_image_folder_dataset(root, classes=("anger", "happy", "sad"), per_class: int = 20,
                              size: int = 32, with_train_test: bool = False, seed: int = 0) -> Path:
    """<root>/<class>/<class>_NNN.png (or train/ and test/ with 80/20 of each class)."""
    root, rng = Path(root), np.random.default_rng(seed)
    for ci, cls in enumerate(classes):
        for i in range(per_class):
            sub = ("train" if i < per_class * 0.8 else "test") if with_train_test else ""
            _save(pattern(ci, len(classes), size, rng), root / sub / cls / f"{cls}_{i:03d}.png")
    return root


def make_fer_folders(root, classes=("angry", "happy", "sad"), n=(12, 4, 4), size: int = 48,
                     seed: int = 0) -> Path:
    """FER2013 Kaggle layout: train/<c>/Training_*.jpg, test/<c>/{PublicTest,PrivateTest}_*.jpg."""
    root, rng, k = Path(root), np.random.default_rng(seed), 0
    for ci, cls in enumerate(classes):
        for prefix, count, top in zip(("Training", "PublicTest", "PrivateTest"), n,
                                      ("train", "test", "test")):
            for _ in range(count):
                k += 1
                _save(pattern(ci, len(classes), size, rng), root / top / cls / f"{prefix}_{1000 + k}.jpg")
    return root


LEGEND_LABELS = ["happiness", "HAPPINESS", "neutral", "NEUTRAL", "sadness", "SURPRISE"]


def make_legend_dataset(root, persons: int = 12, per_person: int = 3, seed: int = 0) -> Path:
    """muxspace layout with its quirks: mixed-case labels, a doubly-labelled image (agreeing),
    a conflicting pair, an unlabelled image, a label row whose file is missing, and a second
    annotation CSV with CR line endings and no header."""
    root, rng = Path(root), np.random.default_rng(seed)
    rows = []
    for p in range(persons):
        for i in range(per_person):
            name = f"Person_{chr(65 + p)}_{i + 1:04d}.jpg"
            lab = LEGEND_LABELS[(p + i) % len(LEGEND_LABELS)]
            ci = ["happiness", "neutral", "sadness", "surprise"].index(lab.lower())
            _save(pattern(ci, 4, 40, rng), root / "images" / name, rgb=p % 4 == 0)
            rows.append((f"user{p % 2}", name, lab))
    rows.append(("user9", rows[0][1], rows[0][2].upper()))  # same label, other spelling
    rows.append(("user9", rows[1][1], "anger"))  # disagrees with the first row for this file
    rows.append(("user9", "Missing_Person_0001.jpg", "fear"))
    _save(pattern(0, 4, 40, rng), root / "images" / "Nobody_Labelled_0001.jpg")
    (root / "data").mkdir(parents=True, exist_ok=True)
    text = "user.id,image,emotion\n" + "".join(f"{u},{n},{e}\n" for u, n, e in rows)
    (root / "data" / "legend.csv").write_text(text)
    second = "".join(f"{u},{n},{e.lower()}\r" for u, n, e in rows[:10])
    (root / "data" / "second.csv").write_bytes(second.encode())
    return root


def make_fer_csv(file, per_class: int = 6, codes=(0, 3, 4), seed: int = 0) -> Path:
    """FER2013 competition CSV: emotion,pixels,Usage (a third of each class per Usage)."""
    file, rng = Path(file), np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for code in codes:
        for i in range(per_class):
            usage = ("Training", "PublicTest", "PrivateTest")[i % 3]
            px = " ".join(map(str, pattern(code, 7, 48, rng).ravel()))
            lines.append(f"{code},{px},{usage}")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join(lines) + "\n")
    return file


def make_rafdb(root, n: int = 14, seed: int = 0) -> Path:
    """RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned/<name>_aligned.jpg."""
    root, rng = Path(root), np.random.default_rng(seed)
    lines = []
    for i in range(n):
        split = "train" if i < n * 0.7 else "test"
        code = i % 7 + 1
        name = f"{split}_{i + 1:05d}"
        _save(pattern(code, 8, 40, rng), root / "Image" / "aligned" / f"{name}_aligned.jpg", rgb=True)
        lines.append(f"{name}.jpg {code}")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def make_ckplus(root, subjects: int = 12, classes=("anger", "contempt", "happy"),
                seed: int = 0) -> Path:
    """CK+48: <class>/S0xx_00y_000000zz.png, three frames per (subject, class) sequence."""
    root, rng = Path(root), np.random.default_rng(seed)
    for s in range(subjects):
        for ci, cls in enumerate(classes):
            for f in range(3):
                _save(pattern(ci, len(classes), 48, rng),
                      root / cls / f"S{s + 10:03d}_{ci + 1:03d}_{f + 10:08d}.png")
    return root


def make_odd_images(folder) -> dict[str, Path]:
    """One file per awkward case, named by the case: modes, formats, EXIF, size, corruption."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = Image.fromarray(pattern(0, 3, 40, rng), "L")
    out = {}

    def put(name, img, **kw):
        out[name.split(".")[0]] = d / name
        img.save(d / name, **kw)

    rgba = base.convert("RGBA")
    rgba.putalpha(Image.new("L", base.size, 0))  # fully transparent: must come out white
    put("rgba.png", rgba)
    put("palette.png", base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE))
    put("cmyk.jpg", base.convert("RGB").convert("CMYK"))
    put("gray16.png", Image.fromarray(np.full((20, 30), 65535, dtype=np.uint16)))
    put("la.png", base.convert("LA"))
    put("bilevel.png", base.convert("1"))
    put("webp_named.jpg", base.convert("RGB"), format="WEBP")
    wide = Image.new("L", (40, 20), 0)
    wide.paste(255, (20, 0, 40, 20))  # left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": right half ends up at the bottom
    put("exif_rotated.jpg", wide, exif=exif.tobytes(), quality=95)
    put("large.jpg", Image.new("RGB", (4000, 3000), (200, 30, 30)), quality=50)
    (d / "corrupt.jpg").write_bytes(b"this is not an image at all" * 10)
    out["corrupt"] = d / "corrupt.jpg"
    buf = io.BytesIO()
    base.resize((200, 200)).save(buf, format="JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out["truncated"] = d / "truncated.jpg"
    return out


def make_data_root(root) -> Path:
    """A fake data root holding a tiny copy of every named dataset, in its real layout."""
    root = Path(root)
    make_fer_folders(root / "fer2013")
    make_legend_dataset(root / "facial_expressions")
    make_image_folder_dataset(root / "six_emotions", classes=("anger", "happy", "pain"), size=48)
    make_ckplus(root / "ckplus48")
    make_rafdb(root / "rafdb")
    return root
