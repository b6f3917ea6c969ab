"""The throughput benchmarks run and report what they measured (no timing is asserted)."""
from lib import bench


def test_rate_measures_training_images_per_second():
    r = bench.rate("small_cnn", 32, 1, steps=2, batch=8)
    assert r > 0


def test_verdict_reads_the_channels_last_ratio():
    df = bench.bench_train(["small_cnn"], [32], batch=8, steps=1, rounds=2, progress=False)
    wide, overall = bench.verdict(df)
    assert set(wide["faster"]) <= {"on", "off"} and overall > 0
    assert len(df) == 2 and (df["images_per_s"] > 0).all()


def test_amp_bench_reports_both_precisions():
    df = bench.bench_amp(["small_cnn:32:1"], steps=1, rounds=2)
    assert list(df.columns) == ["cell", "fp32_img_s", "bf16_img_s", "bf16_speedup"]
    row = df.iloc[0]
    assert row.fp32_img_s > 0 and row.bf16_img_s > 0
    assert abs(row.bf16_speedup - row.bf16_img_s / row.fp32_img_s) < 1e-9
