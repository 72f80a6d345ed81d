"""A sandbox for the Starlink AST library: texts it could crash on are parsed in a child process first.

The AST library (``starlink.Ast``) parses its native text format in C; some corrupted texts (a truncated
``WcsMap``, a mangled key, a missing ``Naxes``) make it crash the whole process.  Sky
projections come from files, so every distinct text is first parsed in a long-lived child
process: if the child crashes or reports an error, the text is refused with a message,
and this process never feeds it to AST.  Results are cached per text, so a tract whose
patches share one projection is checked once.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["check_ast_text", "prestart"]

_CHILD = Path(__file__).with_name("_starlink_sandbox_child.py")
_TIMEOUT_S = 60.0
_CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The child does no linear algebra: numpy's BLAS starting one thread per core (a third of the
child's start-up CPU on two cores) is left out."""


class _Checker:
    """One child process, restarted after a crash; requests are serialised by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._cache: dict[str, str | None] = {}

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._close()
            self._proc = subprocess.Popen(
                [sys.executable, str(_CHILD)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **_CHILD_ENV},
            )
        return self._proc

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            self._close()

    def prestart(self) -> None:
        """Start the child now (it loads AST while the caller does other work); never waits."""
        if self._lock.acquire(blocking=False):
            try:
                self._start()
            finally:
                self._lock.release()

    def _ask(self, data: bytes) -> str:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        answer: list[bytes] = []

        def read() -> None:
            answer.append(proc.stdout.readline())  # type: ignore[union-attr]

        try:
            proc.stdin.write(len(data).to_bytes(8, "big") + data)
            proc.stdin.flush()
        except OSError:
            pass
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(_TIMEOUT_S)
        if reader.is_alive():
            proc.kill()
            reader.join()
            self._close()
            return "ERR parsing the text did not finish (hang)"
        line = answer[0].decode("utf-8", errors="replace").strip() if answer else ""
        if not line:
            code = proc.wait()
            self._close()
            return f"ERR parsing the text crashed the AST library (exit status {code})"
        return line

    def check(self, text: str) -> str | None:
        key = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
        with self._lock:
            if key not in self._cache:
                line = self._ask(text.encode("utf-8", errors="replace"))
                self._cache[key] = None if line == "OK" else line.removeprefix("ERR").strip()
            return self._cache[key]


_checker = _Checker()
atexit.register(_checker.close)


def prestart() -> None:
    """Start the sandbox's child process in the background, if it is not running.

    Openers call this before they fetch a file's metadata, so that the child's start (a
    Python interpreter importing AST, about a tenth of a second) overlaps the network
    instead of following it.  It does not wait for anything.
    """
    _checker.prestart()


def check_ast_text(text: str) -> str | None:
    """``None`` when AST parses ``text`` safely, else why it does not (checked in a child process)."""
    return _checker.check(text)
