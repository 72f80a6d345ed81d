"""Child process of :mod:`cellcoadd_dask.starlink_sandbox`: parses AST texts it is sent, one at a time.

Protocol on stdin/stdout: the parent writes an 8-byte big-endian length and that many bytes
of UTF-8 AST text; the child answers one line, ``OK`` or ``ERR <message>``.  A text that
crashes the AST library kills only this process.  Run as a script: imports nothing of the
package, so it starts fast.
"""

from __future__ import annotations

import sys


class AstLines:
    """What ``starlink.Ast.Channel`` reads from: one line of ``text`` per ``astsource()`` call."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._next = 0

    def astsource(self) -> str | None:
        if self._next >= len(self._lines):
            return None
        self._next += 1
        return self._lines[self._next - 1]


def _check(text: str) -> str:
    from starlink import Ast

    try:
        obj = Ast.Channel(AstLines(text)).read()
        if obj is None or not isinstance(obj, Ast.Mapping):
            return "ERR the text does not hold an AST Mapping or FrameSet"
        if obj.Nin != 2 or obj.Nout != 2:
            return f"ERR the mapping must map 2 -> 2 axes, not {obj.Nin} -> {obj.Nout}"
        obj.tran([[0.0, 1000.0], [0.0, 1000.0]], True)
        obj.tran([[0.1, 0.2], [-0.1, 0.2]], False)
    except Exception as exc:  # every failure goes back to the parent as text
        return "ERR " + " ".join(str(exc).split())[:500]
    return "OK"


def main() -> None:
    """Load AST, then answer check requests until stdin closes.

    AST (and numpy under it) is loaded before the first request is read: a parent starts the
    child ahead of need (:func:`~cellcoadd_dask.starlink_sandbox.prestart`), so the loading
    overlaps its own work and the first check finds the library ready.
    """
    from starlink import Ast  # noqa: F401

    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        head = stdin.read(8)
        if len(head) < 8:
            return
        body = stdin.read(int.from_bytes(head, "big"))
        stdout.write(_check(body.decode("utf-8", errors="replace")) + "\n")
        stdout.flush()


if __name__ == "__main__":
    main()
