"""The local directories a Train worker writes its checkpoints into before Ray uploads them — and the ones a
killed worker left behind.

Ray removes a checkpoint's local directory after its upload (``delete_local_checkpoint_after_upload``), but a
worker killed before that (out of memory, a stopped trial, SIGKILL) leaves it in the temporary directory, and at
Criteo's size one holds ~1 GB. Each directory's name carries its worker's PID; a worker starting on a node removes
the directories of workers that no longer run there, once they are older than ``min_age_s`` (an upload takes
seconds; the age also keeps a PID from another PID namespace sharing the directory from looking dead too soon).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

PREFIX = "autosrh-checkpoint-"
MIN_AGE_S = 3600.0


def new_directory() -> Path:
    """A fresh local checkpoint directory of this process (``autosrh-checkpoint-<pid>-<random>``)."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_orphans(root: Optional[Path] = None, min_age_s: float = MIN_AGE_S) -> int:
    """Remove the checkpoint directories under ``root`` (the temporary directory) whose worker no longer runs and
    that are older than ``min_age_s``; return how many were removed."""
    root = Path(root or tempfile.gettempdir())
    removed = 0
    now = time.time()
    for path in root.glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        try:
            old = now - path.stat().st_mtime >= min_age_s
        except FileNotFoundError:  # another worker removed it
            continue
        if pid.isdigit() and path.is_dir() and old and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
