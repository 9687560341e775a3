"""The trust-on-first-use lock file of a models folder, and an inter-process file lock.

`pal-models.lock.json` in each folder this project downloads into records, per file it wrote,
the sha256 (and for converted Drive files the original's name, size and sha256), and per Hub
reference the commit it was pinned to. Later loads and `pal models verify` check against it.
Writes are atomic and serialised by a lock file in `.locks/`, so concurrent processes never lose
or corrupt a record.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import time
from pathlib import Path

from .registry import LOCK_NAME, ChecksumMismatchError, RegistryError, file_sha256


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def file_lock(path: Path, on_wait=None):
    """An exclusive inter-process lock on `path` (created). POSIX flock / Windows msvcrt; where
    neither works, unique temp names + atomic rename still keep the cache consistent.
    `on_wait()` is called once if another process holds the lock (e.g. to say so)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+b")
    try:
        try:
            import fcntl

            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except ImportError:  # Windows
            try:
                import msvcrt

                waited = False
                while True:
                    try:
                        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                        break
                    except OSError:
                        if on_wait is not None and not waited:
                            on_wait()
                        waited = True
                        time.sleep(0.2)
            except ImportError:  # pragma: no cover
                pass
        yield
    finally:
        f.close()  # closing releases the lock


def read_lock(directory: str | os.PathLike) -> dict:
    """The lock file of a models folder: {"files": {file name: record}, "refs": {hf ref: record}}."""
    path = Path(directory) / LOCK_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": 1, "files": {}, "refs": {}}
    except (OSError, ValueError) as e:
        raise RegistryError(f"{path}: unreadable lock file ({e}); move it away and run `pal models download` "
                            "again to re-record the files") from e
    data.setdefault("files", {})
    data.setdefault("refs", {})
    return data


def update_lock(directory: Path, section: str, key: str, record: dict) -> None:
    from ..core.imageio import atomic_write_bytes

    with file_lock(directory / ".locks" / f"{LOCK_NAME}.lock"):
        data = read_lock(directory)
        data["version"] = 1
        data[section][key] = record
        atomic_write_bytes(directory / LOCK_NAME, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def check_lock(path: Path, what: str) -> dict | None:
    """If this project recorded `path` in its folder's lock file, verify it (sha256); returns the
    record, or None for a file the user put there. A mismatch is refused; the file is left as is."""
    rec = read_lock(path.parent)["files"].get(path.name)
    if rec is None:
        return None
    actual = file_sha256(path)
    if actual != rec.get("sha256"):
        raise ChecksumMismatchError(
            f"{path} ({what}) does not match the sha256 recorded when it was downloaded "
            f"({rec.get('sha256')} in {path.parent / LOCK_NAME}; now {actual}): it changed on disk. It was left "
            f"untouched: delete it and run `pal models download {rec.get('model') or what}` again, or "
            "`pal models verify` to check the others.")
    return rec
