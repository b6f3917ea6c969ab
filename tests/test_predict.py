"""lib.predict end to end: generated images, a tiny saved checkpoint, the CLI."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lib import config, models, predict
from lib.data import imageio

torch.set_num_threads(1)
CLASSES = ["anger", "happiness", "sadness"]


@pytest.fixture()
def setup(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    (folder / "nested").mkdir(parents=True)
    for i in range(4):
        arr = rng.integers(0, 256, (40 + 8 * i, 36, 3), dtype=np.uint8)  # non-square
        sub = folder / "nested" if i == 3 else folder
        Image.fromarray(arr).save(sub / f"img{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    torch.manual_seed(0)
    model = models.create("small_cnn", len(CLASSES), in_chans=1, img_size=32)
    ckpt = models.save_checkpoint(tmp_path / "ckpt.pt", model, CLASSES, img_size=24, channels=1)
    return folder, ckpt, model.eval()


def test_predict_folder_matches_training_preprocessing(setup):
    folder, ckpt, model = setup
    df = predict.predict(folder, ckpt, progress=False)
    assert len(df) == 5  # 4 images + 1 broken, the .txt is not an image
    assert list(df.columns) == ["path", "pred", "confidence", *CLASSES, "error"]
    ok = df[df.error == ""]
    bad = df[df.error != ""]
    assert len(ok) == 4 and bad.path.str.endswith("broken.jpg").all()
    assert bad[CLASSES].isna().all().all() and bad.pred.isna().all()
    probs = ok[CLASSES].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert set(ok.pred) <= set(CLASSES)
    assert np.allclose(ok.confidence, probs.max(1))
    # reference pipeline: the training decoder at the checkpoint's size, then preprocess
    for _, r in ok.iterrows():
        arr, _, err = imageio.decode(r.path, 24, 1)
        assert err == ""
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]
        with torch.no_grad():
            p = torch.softmax(model(models.preprocess(x, model.fer_cfg, "cpu")), 1)[0]
        assert np.allclose(p.numpy(), r[CLASSES].to_numpy(dtype=float), atol=1e-5)


def test_predict_tensor_and_file_list_inputs(setup):
    folder, ckpt, model = setup
    files = sorted(str(p) for p in folder.glob("img*.png"))
    by_list = predict.predict(files, ckpt, progress=False)
    assert len(by_list) == 3 and (by_list.error == "").all()
    x = torch.randint(0, 256, (5, 1, 24, 24), dtype=torch.uint8)
    by_tensor = predict.predict(x, ckpt)
    assert len(by_tensor) == 5 and by_tensor.path.tolist()[0] == "#0"
    with pytest.raises(TypeError):
        predict.predict(x.float(), ckpt)
    with pytest.raises(FileNotFoundError):
        predict.predict([str(folder / "missing.png")], ckpt)


def test_cli_writes_csv(setup, tmp_path, capsys):
    folder, ckpt, _ = setup
    out = tmp_path / "out" / "pred.csv"
    assert predict.main([str(folder), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 5 and set(CLASSES) <= set(df.columns)
    assert "1 skipped" in capsys.readouterr().out
    assert predict.main([str(tmp_path / "empty_nowhere"), "--checkpoint", str(ckpt)]) == 1
    nowhere = tmp_path / "empty_nowhere"
    assert capsys.readouterr().err == f"error: {nowhere} is neither a folder nor a file\n"
    with pytest.raises(FileNotFoundError):
        predict.main([str(tmp_path / "empty_nowhere"), "--checkpoint", str(ckpt), "--debug"])


def _bad_checkpoints(tmp_path, ckpt) -> dict:
    """Checkpoints that cannot be used, by case -> (file, what the error must say)."""
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"definitely not a checkpoint" * 50)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:2000])
    wrong = tmp_path / "wrong_keys.pt"
    torch.save({"weights": torch.zeros(2)}, wrong)
    return {"missing": (tmp_path / "nope.pt", "no such file"),
            "corrupt": (corrupt, "not a torch checkpoint"),
            "truncated": (truncated, "cannot be read"),
            "wrong keys": (wrong, "not a lib.models checkpoint, missing ['model_name'")}


def test_cli_bad_checkpoint_is_one_line_naming_the_file(setup, tmp_path, capsys):
    folder, ckpt, _ = setup
    for case, (bad, says) in _bad_checkpoints(tmp_path, ckpt).items():
        assert predict.main([str(folder), "--checkpoint", str(bad)]) == 1, case
        err = capsys.readouterr().err
        assert err.startswith(f"error: checkpoint {bad}: ") and says in err, (case, err)
        assert err.count("\n") == 1 and "weights_only=False" not in err, (case, err)
        with pytest.raises(predict.CheckpointError, match=re.escape(says)):
            predict.main([str(folder), "--checkpoint", str(bad), "--debug"])


def test_module_cli_prints_no_traceback(setup, tmp_path):
    folder, ckpt, _ = setup
    bad, _ = _bad_checkpoints(tmp_path, ckpt)["corrupt"]
    cmd = [sys.executable, "-m", "lib.predict", str(folder), "--checkpoint", str(bad)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=config.ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        f"error: checkpoint {bad}: not a torch checkpoint of tensors and plain values "
        "(corrupt, or unsafe to load)"]


def test_dangling_symlink_gets_an_error_row(setup):
    folder, ckpt, _ = setup
    (folder / "gone.png").symlink_to(folder / "deleted.png")
    df = predict.predict(folder, ckpt, progress=False)
    row = df[df.path == str(folder.resolve() / "gone.png")]
    assert len(df) == 6 and row.error.item().startswith("missing file: ")
    assert "dangling symlink" in row.error.item() and row.pred.isna().all()


def test_cli_whole_files_and_faces_tables(setup, capsys):
    folder, ckpt, _ = setup
    assert predict.main([str(folder), "--checkpoint", str(ckpt), "--faces", "none"]) == 0
    out = capsys.readouterr().out
    assert "emotion" in out and "box" not in out and "nested/img3.png" in out
    assert predict.main([str(folder), "--checkpoint", str(ckpt)]) == 0  # noise: no faces
    out = capsys.readouterr().out
    assert "no face found in 4 (classified whole)" in out and "1 skipped" in out
    assert "box (x,y,w,h)" in out and "whole 36x40" in out
    with pytest.raises(TypeError, match="predict_faces takes files"):
        predict.predict_faces(torch.zeros((1, 1, 24, 24), dtype=torch.uint8), ckpt)
