"""Releases end to end on a tiny store: choose and publish, predict on photos, the video
demo, the ONNX export, and the one-line errors."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lib import config, demo, export, models, predict, release
from lib.training import plan, runner, store
from tests import fixtures

# the real six_emotions photos (read-only), for the parts that need a detectable face
REAL_SIX = Path(os.environ.get("FER_DATA_ROOT") or config.ROOT.parent / "shared" / "data"
                ).resolve() / "six_emotions"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Three smoke fits of fake six_emotions (01.small_cnn seeds 0 and 1, one label-shuffle
    fit) and their release, made once for the module (the fits are the slow part)."""
    base = tmp_path_factory.getbasetemp()
    tmp = tmp_path_factory.mktemp("release")
    env = {"FER_DATA_ROOT": str(fixtures.make_data_root(tmp / "data")),
           "FER_STORE_DIR": str(tmp / "store"), "FER_MODELS_DIR": str(tmp / "models"),
           "FER_SPLITS_DIR": str(base / "splits"), "FER_CACHE_DIR": str(base / "cache")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("FER_CKPT_DIR", raising=False)
        P = config.get_profile("smoke")
        assert runner.train_missing(P, ["six_emotions"], ["01"]) == 2
        spec = plan.arm(P, "six_emotions", "01.small_cnn").specs[0]
        splits = runner._splits(P, "six_emotions")
        store.fit(replace(spec, seed=1), splits, "smoke", train_missing=True)
        info = release.publish("smoke", "six_emotions")
        runs = {s: store.fit(replace(spec, seed=s), splits, "smoke", train_missing=False)
                for s in (0, 1)}
    return {"env": env, "info": info, "runs": runs, "tmp": tmp}


@pytest.fixture
def env(built, monkeypatch) -> dict:
    """The built store, data root and models folder for this test."""
    for k, v in built["env"].items():
        monkeypatch.setenv(k, v)
    return built


def _face_photo() -> Path:
    """A real photo in which the cascade finds a face (skips without the real data)."""
    folder = REAL_SIX / "happy"
    if not folder.is_dir():
        pytest.skip(f"real six_emotions photos not found under {REAL_SIX}")
    from lib.data import imageio

    for f in sorted(folder.iterdir())[:40]:
        try:
            img = imageio.load(str(f), 1)
        except Exception:
            continue
        if predict.detect_faces(np.asarray(img)):
            return f
    pytest.skip("no photo with a detectable face among the first 40")


def _noise_photo(tmp_path: Path) -> Path:
    f = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), np.uint8)).save(f)
    return f


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- choose and publish ---
def test_pick_takes_the_best_arm_mean_then_its_best_seed():
    def fit(model, seed, f1, lr=1e-3):
        spec = {"model": model, "recipe": {"lr": lr}, "seed": seed, "img_size": 48}
        return Path(f"{model}-{seed}.json"), {"spec": spec, "attrs": {"best_val_macro_f1": f1}}

    # arm a has the best single seed (0.9) but the lower mean (0.5 vs 0.6)
    cands = [fit("a", 0, 0.9), fit("a", 1, 0.1), fit("b", 0, 0.55), fit("b", 1, 0.65),
             fit("b", 2, 0.58, lr=5e-4)]  # another recipe: another arm, alone at 0.58
    i, table = release.pick(cands)
    assert cands[i][0].stem == "b-1"
    assert [a["seeds"] for a in table] == [2, 1, 2]
    assert np.isclose(table[0]["mean_val_macro_f1"], 0.6)


def test_official_scores_read_the_records_official_probabilities(fake_data_root):
    from lib import data
    from lib.analysis import studies

    P = config.get_profile("smoke")
    splits = data.load_splits("fer2013", max_per_class=P.max_per_class, seed=0)
    y = studies.official_test(splits, 48, 1).labels.numpy()
    right, wrong = np.eye(len(splits.classes))[y], np.eye(len(splits.classes))[(y + 1) % 3]
    wrong[: len(y) // 4] = right[: len(y) // 4]
    choice = release.Choice("smoke", "fer2013", Path("x.json"),
                            {"spec": {"img_size": 48, "channels": 1}}, "a", 0.5, 1, [])
    got = release._official_scores(choice, {"test_official": right, "test_official_tta": wrong},
                                   splits)
    assert got == {"n": len(y), "accuracy": 1.0, "accuracy_flip_tta": (len(y) // 4) / len(y)}
    assert release._official_scores(choice, {"test": right}, splits) is None
    with pytest.raises(release.ReleaseError, match="official test split here"):
        release._official_scores(choice, {"test_official": right[1:]}, splits)


def test_publish_writes_the_chosen_fit_and_its_provenance(env):
    info, runs = env["info"], env["runs"]
    best = max((0, 1), key=lambda s: (runs[s].history.attrs["best_val_macro_f1"], -s))
    assert info["seed"] == best and info["model"] == "small_cnn"
    assert info["arm"] == "01.small_cnn" and info["arm_seeds"] == 2  # label shuffle left out
    rep = runs[best].reports["test"]
    for k in ("macro_f1", "accuracy", "balanced_accuracy"):
        assert np.isclose(info["test"][k], rep[k])
    d = Path(env["env"]["FER_MODELS_DIR"])
    meta = json.loads((d / "six_emotions.json").read_text())
    assert meta == json.loads(json.dumps(info))
    assert meta["record"] == f"smoke/six_emotions/{Path(runs[best].record).name}"
    assert meta["preprocessing"] == {"img_size": 48, "channels": 3, "face_crop": False}
    assert meta["val_probs_max_abs_diff"] < 1e-4 and meta["commit"]
    ckpt = torch.load(d / "six_emotions.pt", map_location="cpu", weights_only=True)
    assert set(ckpt) == {*models.CKPT_KEYS, "channels", "extra"}  # no optimiser or history
    assert ckpt["extra"] == {"release": {"dataset": "six_emotions", "profile": "smoke",
                                         "record": Path(runs[best].record).name,
                                         "key": info["key"]}}
    model, m = models.load_checkpoint(d / "six_emotions.pt")
    assert m["classes"] == meta["classes"] == ["anger", "happiness", "pain"]


def test_release_cli_and_its_errors(env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FER_MODELS_DIR", str(tmp_path / "models"))
    assert release.main(["--profile", "smoke", "--dataset", "six_emotions"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"six_emotions: published .*six_emotions\.pt .*small_cnn seed \d", out)
    assert "test macro-F1" in out and (tmp_path / "models" / "six_emotions.json").is_file()
    assert "no table written" in out
    readme = tmp_path / "models" / "README.md"
    readme.write_text(f"# hand text\n{release.TABLE_START}\nstale\n{release.TABLE_END}\ntail\n")
    assert release.main(["--profile", "smoke", "--dataset", "six_emotions"]) == 0
    assert "release table rewritten" in capsys.readouterr().out
    text = readme.read_text()
    info = json.loads((tmp_path / "models" / "six_emotions.json").read_text())
    row = next(line for line in text.splitlines() if line.startswith("| `six_emotions`"))
    assert f"| {info['test']['macro_f1']:.3f} | {info['test']['accuracy']:.3f} |" in row
    assert row.endswith("| – |") and info["test_official"] is None  # no official split
    assert text.startswith("# hand text\n") and text.endswith("tail\n") and "stale" not in text
    assert release.main(["--profile", "smoke", "--dataset", "fer2013"]) == 1
    assert "no stored fit" in _one_error_line(capsys)
    monkeypatch.setattr(release, "MAX_BYTES", 1000)
    assert release.main(["--profile", "smoke", "--dataset", "six_emotions"]) == 1
    assert "over the 0 MB" in _one_error_line(capsys)
    monkeypatch.setenv("FER_CKPT_DIR", str(tmp_path / "no_ckpts"))
    assert release.main(["--profile", "smoke", "--dataset", "six_emotions"]) == 1
    assert "checkpoints are not committed" in _one_error_line(capsys)
    with pytest.raises(release.ReleaseError):
        release.main(["--profile", "smoke", "--dataset", "six_emotions", "--debug"])


def test_publish_refuses_a_corrupt_checkpoint(env, tmp_path, monkeypatch, capsys):
    src = store.checkpoint_dir("smoke", "six_emotions")
    bad = tmp_path / "ckpt"
    shutil.copytree(src, bad / "smoke" / "six_emotions")
    for f in (bad / "smoke" / "six_emotions").glob("*.pt"):
        f.write_bytes(b"not a checkpoint" * 10)
    monkeypatch.setenv("FER_CKPT_DIR", str(bad))
    monkeypatch.setenv("FER_MODELS_DIR", str(tmp_path / "models"))
    assert release.main(["--profile", "smoke", "--dataset", "six_emotions"]) == 1
    assert "not a torch checkpoint" in _one_error_line(capsys)
    assert not (tmp_path / "models").exists()


# ---------------------------------------------------------------- predict --------------
def test_predict_cli_uses_the_release_and_falls_back_to_the_whole_image(env, tmp_path, capsys):
    photo = _noise_photo(tmp_path)
    assert predict.main([str(photo), "--csv", str(tmp_path / "out.csv")]) == 0
    out = capsys.readouterr().out
    assert "six_emotions.pt" in out and "no face found in 1 (classified whole)" in out
    df = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert len(df) == 1 and df.source[0] == predict.WHOLE and df.face[0] == ""
    assert (df.x[0], df.y[0], df.w[0], df.h[0]) == (0, 0, 90, 70)
    assert df.pred[0] in ("anger", "happiness", "pain") and 0 < df.confidence[0] <= 1
    # the whole-image row is exactly what the training decoder + predict give
    same = predict.predict(photo, predict.checkpoint_for(), progress=False)
    assert np.isclose(same.confidence[0], df.confidence[0], atol=1e-6)
    assert predict.main([str(photo)]) == 0
    assert "whole 90x70" in capsys.readouterr().out


def test_predict_finds_the_face_in_a_real_photo(env, tmp_path):
    photo = _face_photo()
    df = predict.predict_faces(photo, predict.checkpoint_for(), faces="largest")
    assert len(df) == 1 and df.source[0] == "face" and df.face[0] == 0
    from lib.data import imageio

    gray = np.asarray(imageio.load(str(photo), 1))
    assert tuple(df[["x", "y", "w", "h"]].iloc[0]) == predict.detect_faces(gray)[0]
    every = predict.predict_faces(photo, predict.checkpoint_for(), faces="all")
    assert len(every) >= 1 and (every.source == "face").all()
    # at lib.data.faces' detection side the crop is the training face crop, box for box
    from lib.data import faces

    box = predict.detect_faces(gray, largest_only=True, work_side=320)[0]
    assert predict.crop_box(box, gray.shape[1], gray.shape[0]) == faces.largest_face(gray)


def test_predict_module_runs_with_no_other_argument(env, tmp_path):
    photo = _noise_photo(tmp_path)
    run = subprocess.run([sys.executable, "-m", "lib.predict", str(photo)], capture_output=True,
                         text=True, cwd=config.ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert "noise.png" in run.stdout and "whole 90x70" in run.stdout


def test_predict_release_errors_are_one_line(env, tmp_path, monkeypatch, capsys):
    photo = _noise_photo(tmp_path)
    assert predict.main([str(photo), "--model", "nope"]) == 1
    assert "no release 'nope'" in _one_error_line(capsys)
    (Path(env["env"]["FER_MODELS_DIR"]) / "zz_corrupt.pt").write_bytes(b"garbage" * 100)
    try:
        assert predict.main([str(photo), "--model", "zz_corrupt"]) == 1
        assert "not a torch checkpoint" in _one_error_line(capsys)
        assert predict.main([str(photo)]) == 0  # the default is six_emotions, not the first
        capsys.readouterr()
    finally:
        (Path(env["env"]["FER_MODELS_DIR"]) / "zz_corrupt.pt").unlink()
    monkeypatch.setenv("FER_MODELS_DIR", str(tmp_path / "empty"))
    assert predict.main([str(photo)]) == 1
    assert "no released model in" in _one_error_line(capsys)


# ---------------------------------------------------------------- demo and export ------
def _video(path: Path, frames: int = 10) -> tuple[Path, bool]:
    """A short mp4: a real face photo drifting sideways, else a generated grating."""
    import cv2

    try:
        img, face = cv2.imread(str(_face_photo())), True
    except pytest.skip.Exception:
        g = fixtures.pattern(0, 3, 96, np.random.default_rng(0))
        img, face = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR), False
    img = cv2.resize(img, (img.shape[1] // 2 * 2, img.shape[0] // 2 * 2))  # even sides
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, img.shape[1::-1])
    for i in range(frames):
        w.write(np.roll(img, 2 * i, axis=1))
    w.release()
    return path, face


def test_demo_annotates_a_generated_video(env, tmp_path, monkeypatch, capsys):
    import cv2

    video, face = _video(tmp_path / "clip.mp4")
    out = tmp_path / "annotated.mp4"
    assert demo.main(["--video", str(video), "--out", str(out), "--max-frames", "8",
                      "--every", "2"]) == 0
    said = capsys.readouterr().out
    assert "8 frame(s), 4 analysed" in said and f"wrote {out}" in said
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()
    if face:  # the photo's face, shifted a few pixels a frame, is found
        assert " 0 face(s) classified" not in said
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert demo.main(["--video", str(video), "--show"]) == 1
    assert "--show needs a display" in _one_error_line(capsys)
    assert demo.main(["--video", str(tmp_path / "none.mp4")]) == 1
    assert "no such file" in _one_error_line(capsys)


def test_export_onnx_matches_torch(env, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "six.onnx"
    assert export.main(["--onnx", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    diff = float(re.search(r"max abs diff (\S+) \(logits\)", said).group(1))
    assert diff <= 1e-4 and out.is_file()
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["classes"]) == ["anger", "happiness", "pain"]
    # any batch size; same probabilities as lib.predict on the same decoded images
    x = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)
    got = ort.InferenceSession(str(out)).run(["probabilities"], {"image": x.numpy()})[0]
    want = predict.predict(x, predict.checkpoint_for())[["anger", "happiness", "pain"]]
    assert np.abs(got - want.to_numpy()).max() <= 1e-4
    assert export.main(["--onnx", "--model", "nope"]) == 1
    assert "no release 'nope'" in _one_error_line(capsys)


def test_a_released_fit_rebuilds_from_its_release_without_checkpoints(env, tmp_path, monkeypatch):
    # a fresh clone has no checkpoints: the released fit's model comes from models/, the
    # other seed's is still refused with the readable error
    monkeypatch.setenv("FER_CKPT_DIR", str(tmp_path / "no_ckpts"))
    info, runs = env["info"], env["runs"]
    model = store.model_of(replace(runs[info["seed"]], model=None))
    want, _ = models.load_checkpoint(Path(env["env"]["FER_MODELS_DIR"]) / "six_emotions.pt")
    for (k, a), b in zip(model.state_dict().items(), want.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="checkpoints are not committed"):
        store.model_of(replace(runs[1 - info["seed"]], model=None))
