"""The IR: frozen dataclasses for expressions and programs, a printer and a verifier."""
from .errors import DSLError, Span
from .expr import (BOOL, FLOAT, INT, Binary, Call, Cast, Const, Expr, Load, RangeReduce, Unary,
                   Var, Where, binary, call, cast, clamp, const, rewrite, unary, walk, where)
from .printer import format_expr, print_program
from .program import (BlockRule, Combiner, ConstDecl, LinearBranch, Param, PooledBranch, Program,
                      ScoreGrad, SelRef, SoftmaxBranch, StaticSelect, TopKSelect)
from .verify import verify

__all__ = [
    "DSLError", "Span", "BOOL", "FLOAT", "INT", "Binary", "Call", "Cast", "Const", "Expr", "Load",
    "RangeReduce", "Unary", "Var", "Where", "binary", "call", "cast", "clamp", "const", "rewrite",
    "unary", "walk", "where", "format_expr", "print_program", "BlockRule", "Combiner", "ConstDecl",
    "LinearBranch", "Param", "PooledBranch", "Program", "ScoreGrad", "SelRef", "SoftmaxBranch",
    "StaticSelect", "TopKSelect", "verify",
]
