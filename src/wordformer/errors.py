"""The one exception type for user mistakes, and the one set of checks that raise it for plain values.

The CLI catches only :class:`WordformerError`, prints its one-line message and exits with status 2;
any other exception is a bug and keeps its traceback. Each check names the value the way the user gave
it: a config field (``num_heads``) or a command-line option (``--num-samples``).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional


class WordformerError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do."""


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an int to Python, never to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int = 1, high: Optional[int] = None) -> int:
    """``value`` as an integer in ``[low, high]``, else one line: "NAME=VALUE must be an integer >= LOW"."""
    if not is_int(value) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise WordformerError(f"{name}={value!r} must be an integer {bound}")
    return value


def check_number(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = True) -> float:
    """``value`` as a real number inside the interval; NaN and bools are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # value != value: NaN
        raise WordformerError(f"{name}={value!r} must be a number")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise WordformerError(f"{name}={value!r} must lie in {'(' if low_open else '['}{low}, {high}"
                              f"{')' if high_open else ']'}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else one line listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise WordformerError(f"{name}={value!r} must be one of: {', '.join(map(str, choices))}")
    return value
