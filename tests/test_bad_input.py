"""Bad inputs (issue 17): each is a clear error naming file:line, or a counted skip naming the
file; never a silent drop, a lost good row, or a traceback at a command line."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib import data
from lib.data import imageio
from lib.data.readers import LabelFileError
from tests import fixtures

TOKENS = np.array([list(f"{v} ".encode()) for v in range(100, 256)], dtype=np.uint8)


def _pixel_csv(file, n: int, seed: int = 0) -> list[str]:
    """A FER2013-style CSV of `n` distinct noise rows (no duplicates, nothing blank); its lines.
    Values 100-255 are all 3 digits, so the text is built by array indexing (10,000 rows fast)."""
    rng = np.random.default_rng(seed)
    text = TOKENS[rng.integers(0, len(TOKENS), (n, 48 * 48))].reshape(n, -1)[:, :-1]
    usage = ("Training", "PublicTest", "PrivateTest")
    lines = ["emotion,pixels,Usage"] + [
        f"{i % 7},{row.tobytes().decode()},{usage[i % 3]}" for i, row in enumerate(text)]
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join(lines) + "\n")
    return lines


def _set_pixels(file, line: int, cell: str) -> None:
    """Replace the pixels cell on a 1-based line of the CSV."""
    lines = file.read_text().splitlines()
    code, _, usage = lines[line - 1].split(",")
    lines[line - 1] = f"{code},{cell},{usage}"
    file.write_text("\n".join(lines) + "\n")


# --- 1. FER2013 pixel CSV: a bad cell skips its row only ---------------------------------------

def test_bad_pixel_cells_skip_only_their_rows_with_line_numbers(tmp_path):
    f = tmp_path / "fer" / "fer2013.csv"
    _pixel_csv(f, 30)
    bad = {3: "", 7: "12 abc 40", 12: "1 2 3", 20: " ".join(["300"] * 2304)}
    for line, cell in bad.items():
        _set_pixels(f, line, cell)
    m = data.load_manifest(f.parent)
    assert len(m) == 30  # every row listed, the bad ones included
    a = data.audit(m, progress=False, cache=False)
    errors = dict(zip(a["key"], a["error"]))
    for line in bad:
        assert errors[f"fer2013.csv#{line - 2}"].startswith(f"bad pixels: {f.resolve()}:{line}: ")
    assert "empty pixels cell" in errors["fer2013.csv#1"]
    assert "non-numeric" in errors["fer2013.csv#5"] and "expected 2304" in errors["fer2013.csv#10"]
    assert "outside 0-255" in errors["fer2013.csv#18"]
    u = data.usable(a)
    assert len(u) == 26 and u.attrs["skipped"] == {"undecodable": 4}
    ds = data.ImageTensors(m, size=48, channels=1, progress=False, cache=False)
    assert len(ds) == 26 and len(ds.skipped) == 4
    assert ds.skipped["reason"].str.contains(f"{f.resolve()}:3: empty pixels cell").any()


def test_bad_first_pixel_row_does_not_set_the_image_size(tmp_path):
    f = tmp_path / "fer" / "fer2013.csv"
    _pixel_csv(f, 6)
    _set_pixels(f, 2, "1 2 3 4")  # the first data row: a 2x2 "image"
    pixels, reasons = imageio.csv_table(str(f.resolve()))
    assert pixels.shape == (6, 48, 48)
    assert reasons[0].endswith("4 pixel values, expected 2304 (48x48)")
    assert reasons[1:] == [""] * 5


def test_10000_row_pixel_csv_with_one_bad_row_keeps_9999_rows(tmp_path):
    f = tmp_path / "fer" / "fer2013.csv"
    _pixel_csv(f, 10_000)
    _set_pixels(f, 5_002, "")  # row 5,000
    t0 = time.perf_counter()
    m = data.load_manifest(f.parent)
    a = data.audit(m, progress=False, cache=False)
    u = data.usable(a)
    t_audit = time.perf_counter() - t0
    ds = data.ImageTensors(m, size=48, channels=1, progress=False, cache=False)
    t_all = time.perf_counter() - t0
    print(f"\n10,000-row pixel CSV, 1 bad row: manifest + audit + usable {t_audit:.1f} s, "
          f"+ ImageTensors {t_all:.1f} s")
    assert len(m) == 10_000 and len(u) == 9_999 and len(ds) == 9_999
    assert u.attrs["skipped"] == {"undecodable": 1}
    assert ds.skipped["reason"].tolist() == [f"bad pixels: {f.resolve()}:5002: empty pixels cell"]


# --- 2. empty class folders and dangling symlinks are reported ----------------------------------

def _messy_folder(tmp_path):
    """Two good classes, an empty class folder, a dangling .jpg symlink, a corrupt file."""
    root = fixtures.make_image_folder_dataset(tmp_path / "messy", classes=("anger", "happy"),
                                              per_class=4)
    (root / "sad").mkdir()
    (root / "happy" / "gone.jpg").symlink_to(root / "deleted_target.jpg")
    (root / "anger" / "corrupt.jpg").write_bytes(b"not an image" * 20)
    return root


def test_empty_class_folder_and_dangling_symlink_are_listed(tmp_path, capsys):
    root = _messy_folder(tmp_path)
    m = data.load_manifest(root)
    out = capsys.readouterr().out
    assert "1 empty class folder(s)" in out and str(root / "sad") in out
    assert [p["path"] for p in m.attrs["listing_problems"]] == [str(root / "sad")]
    gone = m.set_index("key").loc["happy/gone.jpg"]
    assert gone["missing_file"] and gone["label"] == "happiness"
    a = data.audit(m, progress=False)
    err = a.set_index("key").loc["happy/gone.jpg", "error"]
    assert err == f"missing file: {root / 'happy' / 'gone.jpg'}: dangling symlink to " \
                  f"{root / 'deleted_target.jpg'}"
    s = data.audit_summary(a)
    assert s["empty_class_folders"] == [str(root / "sad")] and s["missing_files"] == 1
    assert data.usable(a).attrs["skipped"] == {"missing file": 1, "undecodable": 1}


def test_non_image_files_in_class_folders_are_reported(tmp_path, capsys):
    root = fixtures.make_image_folder_dataset(tmp_path / "x", classes=("anger", "happy"),
                                              per_class=2)
    (root / "happy" / "photo.heic").write_bytes(b"\0" * 10)
    (root / "neutral").mkdir()
    (root / "neutral" / "notes.txt").write_text("no images here")
    m = data.load_manifest(root)
    out = capsys.readouterr().out
    assert str(root / "neutral") in out and "2 file(s) without an image extension" in out
    notes = {p["path"]: p for p in m.attrs["listing_problems"]}
    assert notes[str(root / "neutral")]["reason"] == \
        f"empty class folder: {root / 'neutral'}: no image files (1 non-image file(s))"
    assert notes[str(root / "happy" / "photo.heic")]["problem"] == "not an image"
    assert data.audit_summary(m)["non_image_files"] == 2


# --- 4. label files: bad lines are errors naming file:line ----------------------------------

@pytest.mark.parametrize("line, why", [
    ("train_00003.jpg", "1 field(s)"),                   # one field: was "not enough values"
    ("train 00003.jpg 5", "3 field(s)"),                 # space in the name: was "invalid literal"
    ("train_00003.jpg five", "code 'five' is not one of"),
    ("train_00003.jpg 9", "code '9' is not one of"),
])
def test_rafdb_bad_list_line_names_file_and_line(tmp_path, line, why):
    root = fixtures.make_rafdb(tmp_path / "rafdb", n=6)
    lst = root / "EmoLabel" / "list_patition_label.txt"
    lines = lst.read_text().splitlines()
    lines[2] = line
    lst.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelFileError) as e:
        data.load_manifest(root)
    assert str(e.value).startswith(f"{lst}: 1 bad line(s): line 3: {why}")


def test_fer_csv_unknown_usage_or_code_names_the_line(tmp_path):
    f = fixtures.make_fer_csv(tmp_path / "fer" / "fer2013.csv", per_class=2)
    lines = f.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",Validation"
    lines[5] = "9" + lines[5][1:]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelFileError) as e:
        data.load_manifest(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: 2 bad line(s): line 4: Usage 'Validation' is not Training")
    assert "line 6: emotion '9' is not one of [0, 1, 2, 3, 4, 5, 6]" in msg


def test_label_csv_bad_line_number_counts_blank_lines(tmp_path):
    f = tmp_path / "legend.csv"
    f.write_text("user.id,image,emotion\nu,a.jpg,happy\n\nu,b.jpg\n")
    with pytest.raises(LabelFileError, match=r"legend.csv: 1 bad line\(s\): line 4: 2 field"):
        data.read_label_csv(f)


def test_data_cli_error_is_one_line_and_debug_shows_traceback(tmp_path, capsys):
    root = fixtures.make_rafdb(tmp_path / "rafdb", n=4)
    lst = root / "EmoLabel" / "list_patition_label.txt"
    lst.write_text(lst.read_text() + "broken_line_without_code\n")
    assert data.main(["audit", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {lst}: 1 bad line(s): line 5: ")
    with pytest.raises(LabelFileError):
        data.main(["audit", str(root), "--debug"])
    assert data.main(["audit", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


# --- 5. the audit names the offending files and writes them to a CSV -----------------------

def test_audit_names_empty_class_dangling_link_and_corrupt_file(tmp_path, capsys):
    root = _messy_folder(tmp_path)
    assert data.main(["audit", str(root)]) == 0
    out = capsys.readouterr().out
    for p in (root / "sad", root / "happy" / "gone.jpg", root / "anger" / "corrupt.jpg"):
        assert str(p) in out
    assert "BytesIO" not in out
    a = data.audit(data.load_manifest(root), progress=False)
    table = pd.read_csv(a.attrs["problems_file"])
    assert a.attrs["problems_file"].endswith("messy-problems.csv")
    assert table["problem"].tolist() == ["empty class folder", "undecodable", "missing file"]
    assert table["path"].tolist() == [str(root / "sad"), str(root / "anger" / "corrupt.jpg"),
                                      str(root / "happy" / "gone.jpg")]
    assert table["reason"][1] == (f"UnidentifiedImageError: {root / 'anger' / 'corrupt.jpg'}: "
                                  "cannot identify image file")
    clean = data.audit(data.load_manifest(fixtures.make_image_folder_dataset(
        tmp_path / "messy2" / "messy", per_class=2)), progress=False)  # same name, clean data
    assert pd.read_csv(clean.attrs["problems_file"]).empty  # no stale list survives


# --- 6. the audit decodes big images reduced ----------------------------------------------------

@pytest.mark.parametrize("fmt, side", [("JPEG", 4096), ("PNG", 2048)])
def test_audit_checks_big_images_on_a_reduced_decode(tmp_path, monkeypatch, fmt, side):
    f = tmp_path / f"big.{fmt.lower()}"
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    Image.fromarray(np.add.outer(ramp // 2, ramp // 2)).convert("RGB").save(f, format=fmt)
    seen = []
    real = imageio.dhash
    monkeypatch.setattr(imageio, "dhash", lambda gray: seen.append(gray.size) or real(gray))
    out = imageio.probe(str(f))
    assert out["decodable"] and out["error"] == ""
    assert (out["width"], out["height"], out["mode"], out["format"]) == (side, side, "RGB", fmt)
    # JPEG: decoded at 1/8 scale (draft), then halved; PNG: decoded whole, reduced right after
    assert seen == [(imageio.AUDIT_SIDE, imageio.AUDIT_SIDE)]
    assert out["pixel_std"] > 20  # the checks still see the image
