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
