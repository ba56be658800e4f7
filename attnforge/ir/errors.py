"""Source spans and the one user-facing error type, DSLError."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A place in the user's source: 1-based line and column, `text` is the whole source line."""

    file: str
    line: int
    col: int
    end_col: int
    text: str

    def caret(self) -> str:
        width = max(1, self.end_col - self.col)
        return " " * (self.col - 1) + "^" * width


class DSLError(Exception):
    """A mistake in a user's attention description.

    Renders as ``file:line:col: error: <what>; <how to fix>`` followed by the source line and a caret.
    """

    def __init__(self, message: str, span: Span | None = None, fix: str | None = None):
        self.message = message
        self.span = span
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        what = self.message if not self.fix else f"{self.message}; {self.fix}"
        if self.span is None:
            return f"error: {what}"
        s = self.span
        return f"{s.file}:{s.line}:{s.col}: error: {what}\n    {s.text}\n    {s.caret()}"

    def with_span(self, span: Span | None) -> "DSLError":
        return self if self.span is not None or span is None else DSLError(self.message, span, self.fix)
