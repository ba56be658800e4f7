"""Evaluation of IR operators on Python scalars, with Python/torch semantics.

Shared by constant folding (canonicalize) and the rewrite-rule tests. Returns None where folding
would change behaviour (division by zero, log of a non-positive number, overflow).
"""
from __future__ import annotations

import math
import operator

from ..ir.expr import BOOL, FLOAT, INT

_BIN = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    "min": min, "max": max, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge, "eq": operator.eq, "ne": operator.ne, "and": operator.and_,
    "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift, "rshift": operator.rshift,
}
_FN = {
    "exp": math.exp, "exp2": lambda x: 2.0 ** x, "log": math.log, "log2": math.log2,
    "sqrt": math.sqrt, "rsqrt": lambda x: 1.0 / math.sqrt(x), "tanh": math.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-x)), "sin": math.sin, "cos": math.cos,
    "abs": abs, "sign": lambda x: (x > 0) - (x < 0), "floor": math.floor, "ceil": math.ceil,
}
PY_TYPE = {BOOL: bool, INT: int, FLOAT: float}


def to_type(value, dtype: str):
    if dtype == FLOAT:
        return float(value)
    if dtype == INT:
        return int(value)
    return bool(value)


def fold_binary(op: str, a, b, dtype: str):
    if op in ("truediv", "floordiv", "mod") and b == 0:
        return None
    if op == "pow" and (isinstance(a, int) and isinstance(b, int) and b < 0 or abs(b) > 64):
        return None
    if op in ("lshift", "rshift") and not 0 <= b < 63:
        return None
    if op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "min", "max"):
        a, b = to_type(a, dtype), to_type(b, dtype)
    try:
        out = _BIN[op](a, b)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    if isinstance(out, int) and not isinstance(out, bool) and abs(out) >= 2 ** 62:
        return None
    return to_type(out, dtype)


def fold_call(fn: str, x, dtype: str):
    x = float(x) if dtype == FLOAT or fn not in ("abs", "sign") else x
    try:
        out = _FN[fn](x)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    return to_type(out, dtype)


def fold_unary(op: str, x, dtype: str):
    if op == "neg":
        return to_type(-x, dtype)
    return (not x) if dtype == BOOL else ~int(x)
