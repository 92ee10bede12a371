"""What the crash tests' child processes write: one fsynced line per thing that happened, so
a line in the journal did happen, even in a process killed right after writing it."""

from __future__ import annotations

import os


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
