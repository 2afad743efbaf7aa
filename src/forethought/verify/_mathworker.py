"""Math-verify worker process: reads `[gold, pred]` JSON lines on stdin, writes "1"/"0" lines.

Run by path (not `-m`) so it imports nothing but math-verify; the parent enforces the wall-clock limit.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # our folder must shadow nothing

import json  # noqa: E402
import logging  # noqa: E402


def _as_latex(text: str) -> str:
    """Wrap an answer in $...$ so math-verify reads it as LaTeX."""
    return f"${text}$"


def main() -> None:
    """Serve comparisons until stdin closes."""
    out = os.fdopen(os.dup(1), "w")  # the protocol channel
    os.dup2(2, 1)  # anything printed by libraries goes to stderr, not into the protocol
    logging.disable(logging.CRITICAL)
    from math_verify import parse, verify

    def compare(gold: str, pred: str) -> bool:
        g = parse(_as_latex(gold), parsing_timeout=None)
        p = parse(_as_latex(pred), parsing_timeout=None)
        return bool(g and p and verify(g, p, timeout_seconds=None))

    compare("\\frac{1}{2}", "0.5")  # warm up sympy's lazy imports before saying ready
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            gold, pred = json.loads(line)
            ok = compare(gold, pred)
        except Exception:  # any failure to parse or compare is simply "not equivalent"
            ok = False
        out.write("1\n" if ok else "0\n")
        out.flush()


if __name__ == "__main__":
    main()
