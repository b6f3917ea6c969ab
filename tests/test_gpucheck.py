"""The prepared gpu check runs end to end (here on the CPU, on the fixture's few images)."""
from lib import gpucheck


def test_compact_copies_a_stratified_slice_and_every_test_image(fake_data_root, tmp_path):
    src = fake_data_root / "fer2013"
    n = gpucheck.compact(src, tmp_path / "dev", train_images=10)
    test = [p for p in (src / "test").glob("*/*") if p.is_file()]
    copied = sorted((tmp_path / "dev" / "fer2013" / "train").glob("*/*"))
    assert n["test"] == len(test) and n["train"] == len(copied)
    assert 7 <= n["train"] <= 14  # about 10, every class kept
    assert {p.parent.name for p in copied} == {p.parent.name for p in (src / "train").glob("*/*")}
    assert copied[0].read_bytes() == (src / copied[0].relative_to(tmp_path / "dev" / "fer2013")).read_bytes()


def test_run_reports_both_modes_with_a_speed_ratio(fake_data_root, tmp_path, capsys):
    assert gpucheck.main(["run", "--train-images", "40", "--epochs", "2", "--models", "vgg_cnn",
                          "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "amp+channels_last" in out and "fp32" in out
    df = gpucheck.pd.read_csv(tmp_path / "out" / "gpucheck.csv")
    assert list(df["mode"]) == ["amp+channels_last", "fp32"]
    assert (df["images_per_s"] > 0).all() and df["speedup_vs_fp32"].notna().iloc[0]
    assert df["epochs"].tolist() == [2, 2] and not df["amp"].any()  # no AMP on a CPU


def test_compact_names_a_folder_without_the_layout(tmp_path):
    import pytest

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        gpucheck.compact(tmp_path / "empty", tmp_path / "o", train_images=10)
