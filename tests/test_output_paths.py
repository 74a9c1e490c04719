"""`motionguide.output_paths`: output folders and files checked before any work, for any user (root included):
what is on disk decides, and a write is tried where the output will go."""

import errno

import pytest

from motionguide.errors import ConfigError
from motionguide.output_paths import check_output_file, check_output_folder


def test_a_new_or_existing_folder_passes_and_nothing_is_created(tmp_path):
    assert check_output_folder(tmp_path) == tmp_path
    assert check_output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert check_output_file(tmp_path / "c" / "tracks.npz") == tmp_path / "c" / "tracks.npz"
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_the_way_is_named(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    for check, path in ((check_output_folder, blocker), (check_output_folder, blocker / "deeper" / "still"),
                        (check_output_file, blocker / "tracks.npz")):
        with pytest.raises(ConfigError, match=f"--out .*: {blocker} is a file, not a folder"):
            check(path)
    with pytest.raises(ConfigError, match="a folder, not a file"):
        check_output_file(tmp_path, "--viz")


def test_a_place_that_refuses_writes_is_named(tmp_path, monkeypatch):
    """A read-only file system (simulated: the trial write fails as it would there, whoever runs the test)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(ConfigError, match=r"--out .*: cannot write in .* \(Read-only file system\)"):
        check_output_folder(tmp_path / "samples")
