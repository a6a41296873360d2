"""Atomic writes: all or nothing under the final name."""
import os

import pytest

from vov3d.utils.files import write_atomic


def test_write_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")

    def fail_halfway(f):
        f.write("half")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        write_atomic(str(target), fail_halfway, binary=False)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["result.json"]
