"""The one bracket scanner: which closer matches which opener, what is left open or stray.

The analyses that need brackets all read them through ``scan``: the brace-distance study
(charnn.study.braces), the balance statistic of generated text (charnn.samplestats), and, as the
reference its vectorised fast path is tested against, the bracket-depth feature
(charnn.inspect.features).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Scan:
    matches: dict[int, int] = field(default_factory=dict)  # position of each matched closer -> its opener's
    stray: int = 0  # closers with nothing open
    crossed: int = 0  # closers whose innermost open bracket is of another kind, e.g. "(]"
    left_open: int = 0  # openers never closed
    depth: list[int] | None = None  # with depths=True: brackets open after each character
    innermost: list[int] | None = None  # with depths=True: the innermost open bracket's position after each (-1: none)


def scan(text: str, pairs: str = "()[]{}", depths: bool = False) -> Scan:
    """Scan text for the bracket pairs given as opener-closer couples ("()[]{}" or just "{}").

    A stray closer is skipped (it does not make the depth negative); a crossed one closes
    nothing. Brackets inside strings or comments count like any other: this reads characters,
    not a language.
    """
    openers = {pairs[k]: pairs[k + 1] for k in range(0, len(pairs), 2)}
    closers = {v: k for k, v in openers.items()}
    out = Scan(depth=[] if depths else None, innermost=[] if depths else None)
    stack: list[tuple[str, int]] = []
    for k, ch in enumerate(text):
        if ch in openers:
            stack.append((ch, k))
        elif ch in closers:
            if not stack:
                out.stray += 1
            elif stack[-1][0] != closers[ch]:
                out.crossed += 1
            else:
                out.matches[k] = stack.pop()[1]
        if out.depth is not None and out.innermost is not None:  # depths=True
            out.depth.append(len(stack))
            out.innermost.append(stack[-1][1] if stack else -1)
    out.left_open = len(stack)
    return out
