"""The one atomic write: no partial file, no leftovers, a dead writer's temp removed."""
from lib import atomic


def test_write_and_leftovers(tmp_path):
    target = tmp_path / "a" / "r.json"
    atomic.write_text(target, "{}")
    assert target.read_text() == "{}"
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]
    stale = target.parent / ".r.json.999999999.tmp"
    stale.write_text("half")
    atomic.write_bytes(target, b"[]")
    assert not stale.exists() and target.read_bytes() == b"[]"


def test_failed_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "r.txt"
    atomic.write_text(target, "old")

    def broken(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    try:
        atomic.write_with(target, broken)
    except RuntimeError:
        pass
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1
