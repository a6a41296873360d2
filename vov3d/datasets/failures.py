"""Bad-file bookkeeping: one log line per file per process, one line per file in
OUTPUT_DIR/bad_videos.txt (shared by all loader workers and ranks through a file lock)."""
import fcntl
import logging
import os
from typing import Optional, Set

from vov3d.utils.errors import UserError

logger = logging.getLogger(__name__)

BAD_FILES_NAME = "bad_videos.txt"
# Distinct files logged individually per process; later ones go to the file only.
_MAX_LOGGED = 50


class DataLoadError(UserError, RuntimeError):
    """The data cannot be read at all (every attempt of a sample, or every test video,
    failed): a problem with the files or the data paths, reported in one line."""


class FailureLog:
    def __init__(self, output_dir: Optional[str]):
        self.path = os.path.join(output_dir, BAD_FILES_NAME) if output_dir else None
        self._seen: Set[str] = set()

    def __getstate__(self):
        # Each worker process starts with its own empty "already logged" set.
        return {"path": self.path, "_seen": set()}

    def record(self, path: str, error: BaseException) -> None:
        if path in self._seen:
            return
        self._seen.add(path)
        message = f"{type(error).__name__}: {error}".replace("\n", " ")
        if len(self._seen) <= _MAX_LOGGED:
            logger.warning("Unreadable sample %s (%s)%s", path, message,
                           f"; listed in {self.path}" if self.path else "")
        elif len(self._seen) == _MAX_LOGGED + 1:
            logger.warning("More than %d unreadable files in this process; further ones are "
                           "only listed in %s.", _MAX_LOGGED, self.path)
        if self.path:
            self._append_once(path, message)

    def _append_once(self, path: str, message: str) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path, "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    f.seek(0)
                    if any(line.split("\t", 1)[0] == path for line in f.read().splitlines()):
                        return
                    f.write(f"{path}\t{message}\n")
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        except OSError as error:  # never let bookkeeping kill a training run
            logger.warning("Could not append to %s: %s", self.path, error)
