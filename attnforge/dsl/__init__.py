"""Front ends: DSL text (lark) and Python snippets (tracing), both producing ir.Program."""
from .parser import parse, parse_file
from .trace import trace

__all__ = ["parse", "parse_file", "trace"]
