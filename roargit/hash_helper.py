"""A second process that hashes a share of many small files while roar hashes the rest.

Small files cost a few system calls and some Python each, all under the GIL: threads cannot
overlap that work, a process can (hashing.HashCache starts one for a batch of
hashing._HELPER_FROM files or more). What it answers is checked as every hash is: anything it
could not settle is hashed again in roar with every check and retry.
"""

from __future__ import annotations

import contextlib
import marshal
import sys
from pathlib import Path

from roargit import TYPE_CHECKING, hashing

if TYPE_CHECKING:
    from typing import Any, BinaryIO


class Helper:
    """A second process that hashes many small files alongside this one.

    Small files cost a few system calls and some Python each, all under the GIL: threads
    cannot overlap that work, a process can. It runs `_hash_path` on the paths it is given,
    in order, and answers in frames of `FRAME` paths, per path the fields of a stable
    `_Hashed`, or None for anything else (a big file, an error, a file that changed while
    read), which is then hashed here again with all the checks and retries. `done` holds
    the answers so far; if it cannot start or fails, it simply answers no more.
    """

    def __init__(self, paths: list[str]) -> None:
        import subprocess  # only a batch of many files starts one
        import threading

        self.done: list[Any] = []
        request = marshal.dumps(paths)
        package_parent = str(Path(__file__).resolve().parents[1])
        self._proc = subprocess.Popen(
            # -I: nothing from the environment or the current folder (a `blake3.py` in the
            # repository must not be what is imported).
            [sys.executable, "-I", "-c", _HELPER_MAIN, package_parent],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        # Threads feed it and read its answers, so that no side waits on a full pipe.
        self._threads = [
            threading.Thread(target=self._feed, args=(request,), name="roar-helper", daemon=True),
            threading.Thread(target=self._read, name="roar-helper", daemon=True),
        ]
        try:
            for thread in self._threads:
                thread.start()
        except BaseException:
            self._proc.kill()  # a thread could not start: the feeder, if any, sees EPIPE
            self._end()
            raise

    @classmethod
    def start(cls, paths: list[str]) -> Helper | None:
        try:
            return cls(paths)
        # No interpreter to start (sys.executable empty or gone), no thread to be had.
        except (OSError, ValueError, RuntimeError):
            return None

    def _feed(self, request: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        with contextlib.suppress(OSError, ValueError), stdin:
            stdin.write(request)

    def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
            while len(head := stdout.read(4)) == 4:
                frame = marshal.loads(stdout.read(int.from_bytes(head, "little")))
                if not isinstance(frame, list):
                    break
                self.done.extend(frame)  # one step under the GIL: readers see whole frames

    def stop(self) -> list[Any]:
        """End it (it may be mid-way) and return its answers, one per path from the first."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._end()
        return self.done

    def _end(self) -> None:
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()


#: Paths per answer frame of the helper: small enough that its progress shows often.
FRAME = 256

_HELPER_MAIN = """
import sys
sys.path[:0] = [sys.argv[1]]
from roargit.hash_helper import serve
serve(sys.stdin.buffer, sys.stdout.buffer)
"""


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """The helper process's work (see `_Helper`)."""
    paths = marshal.load(requests)
    for i in range(0, len(paths), FRAME):
        out: list[tuple[Any, ...] | None] = []
        for path in paths[i : i + FRAME]:
            try:
                # Small files only: blake3 on one thread.
                h = hashing._hash_path(path, None, hashing._POOL_FROM)
            except Exception:  # the caller hashes it again, and says what failed
                out.append(None)
                continue
            out.append(tuple(h) if h.stable else None)
        frame = marshal.dumps(out)
        answers.write(len(frame).to_bytes(4, "little") + frame)
        answers.flush()
