"""Where a benchmarked round's time goes: wall time inside named callables, patched in for the run only.

``simulations.scale_server --breakdown`` wraps the server's steps (report validation, leaf files, tree inserts,
locates, nearest searches, bandit updates, assignment encoding) so each timed round also reports its parts. A part
is inclusive (a nearest search inside the assignment counts in both), and parts need not add up to the round.
The wrappers add a ``perf_counter`` pair per call (≈ 0.1 µs); the committed round totals are timed without them.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = ["StepTimer"]


class StepTimer:
    """Accumulates wall seconds and call counts per part name; :meth:`take` returns and resets them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, part: str) -> None:
        """Time every call of ``owner.attr`` (a module function, a class method or an instance's bound method)
        under ``part`` until :meth:`restore`."""
        had_own = attr in getattr(owner, "__dict__", {})
        original = owner.__dict__[attr] if had_own else None
        target = getattr(owner, attr)
        if not callable(target):
            raise TypeError(f"{owner!r}.{attr} is not callable")
        # a function set on a class must stay a method: wrap the plain function, so ``self`` is still bound
        plain_method = isinstance(owner, type) and had_own and not isinstance(original, (staticmethod, classmethod))
        fn = original if plain_method else target

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - t0
                self.calls[part] += 1

        setattr(owner, attr, timed)

        def undo() -> None:
            if had_own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)

        self._undo.append(undo)

    def take(self) -> dict[str, dict[str, float]]:
        """``{part: {"s": seconds, "calls": n}}`` since the last take, then zeroed."""
        out = {p: {"s": self.seconds[p], "calls": self.calls[p]} for p in sorted(self.seconds)}
        self.seconds.clear()
        self.calls.clear()
        return out

    def restore(self) -> None:
        """Put every wrapped callable back, newest first."""
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> StepTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
