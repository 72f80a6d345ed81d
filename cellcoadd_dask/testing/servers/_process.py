"""Server processes on loopback: free ports, start with ``PR_SET_PDEATHSIG``, wait, stop."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from ...errors import CellCoaddError

__all__ = [
    "LOOPBACK",
    "ServerError",
    "find_executable",
    "free_ports",
    "log_tail",
    "spawn",
    "stop",
    "wait_for_http",
]

LOOPBACK = "127.0.0.1"
"""The only address the servers listen on."""

_PR_SET_PDEATHSIG = 1


class ServerError(CellCoaddError, RuntimeError):
    """A local server could not be started: missing executable, early exit, or not ready in time."""


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports that are free on the loopback interface.

    Parameters
    ----------
    n
        How many ports.

    Returns
    -------
    list of int
        Ports the kernel chose; they are released before returning, so a server should bind them
        soon.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when the parent dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_executable(name: str, hint: str, *extra_dirs: Path) -> str:
    """Locate an executable in ``extra_dirs`` or on ``PATH``.

    Parameters
    ----------
    name
        File name of the executable.
    hint
        How to install it, appended to the error message.
    *extra_dirs
        Directories searched before ``PATH``.

    Returns
    -------
    str
        Path of the executable.

    Raises
    ------
    ServerError
        If it is found nowhere.
    """
    for directory in extra_dirs:
        candidate = directory / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name!r} is required but was not found; {hint}")
    return found


def spawn(cmd: list[str], log: IO[bytes], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server process in its own session that is sent SIGTERM when this process dies.

    Parameters
    ----------
    cmd
        Executable and arguments.
    log
        Binary file receiving the process's standard output and error.
    env
        Environment of the process; `None` inherits this one.

    Returns
    -------
    subprocess.Popen
        The running process.
    """
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Stop ``proc`` with ``sig``, then with SIGKILL if it still runs after ``grace`` seconds.

    Parameters
    ----------
    proc
        A process started by `spawn`.
    sig
        The polite signal (nginx stops gracefully on SIGQUIT).
    grace
        Seconds to wait before SIGKILL.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


def log_tail(path: Path, n: int = 20) -> str:
    """The last ``n`` lines of a server's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    """Wait until ``url`` answers with any HTTP status.

    Parameters
    ----------
    url
        URL polled every 50 ms.
    proc
        The server process; its exit ends the wait.
    timeout
        Seconds to wait at most.
    log_path
        The server's log, whose last lines go into the error message.

    Raises
    ------
    ServerError
        If ``proc`` exits or ``url`` does not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerError(f"server exited with code {proc.returncode}:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2.0):
                return
        except urllib.error.HTTPError:
            return  # any status means the server is up
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"server at {url} not ready after {timeout} s:\n{log_tail(log_path)}")
        time.sleep(0.05)
