"""IR <-> sympy for the arithmetic part of expressions.

Subtrees sympy cannot represent (comparisons, loads, integer division, bit operations ...) become
opaque symbols and come back unchanged. `where` becomes a Piecewise over an opaque condition when
`piecewise=True`, so derivatives pass through it.
"""
from __future__ import annotations

import math

import sympy as sp

from ..ir.expr import (BOOL, FLOAT, INT, Binary, Call, Cast, Const, Expr, Load, Unary, Var, Where,
                       binary, call, cast, const, where)


class Unsupported(Exception):
    pass


class Bridge:
    def __init__(self, piecewise: bool = False):
        self.piecewise = piecewise
        self.leaves: dict[sp.Symbol, Expr] = {}
        self.symbols: dict[Expr, sp.Symbol] = {}

    def leaf(self, e: Expr) -> sp.Symbol:
        if e not in self.symbols:
            name = e.name if isinstance(e, Var) else f"_o{len(self.symbols)}"
            kw = {"integer": True} if e.dtype in (INT, BOOL) else {"real": True}
            sym = sp.Symbol(name, **kw)
            self.symbols[e], self.leaves[sym] = sym, e
        return self.symbols[e]

    # -- IR -> sympy -------------------------------------------------------------------------
    def to_sympy(self, e: Expr):
        match e:
            case Const(value=v, dtype=t) if t != BOOL and math.isfinite(v):
                return sp.Integer(v) if t == INT else sp.Rational(v)
            case Var() | Load():
                return self.leaf(e)
            case Cast(x=x) if e.dtype == FLOAT and x.dtype == INT:
                return self.to_sympy(x)
            case Unary(op="neg", x=x) if e.dtype != BOOL:
                return -self.to_sympy(x)
            case Binary(op=op, a=a, b=b) if op in _SYMPY_BIN and e.dtype != BOOL:
                return _SYMPY_BIN[op](self.to_sympy(a), self.to_sympy(b))
            case Call(fn=fn, x=x) if fn in _SYMPY_FN:
                return _SYMPY_FN[fn](self.to_sympy(x))
            case Where(cond=c, a=a, b=b) if self.piecewise and e.dtype == FLOAT:
                return sp.Piecewise((self.to_sympy(a), sp.Eq(self.leaf(c), 1)),
                                    (self.to_sympy(b), True))
        return self.leaf(e)

    # -- sympy -> IR -------------------------------------------------------------------------
    def from_sympy(self, s) -> Expr:
        if isinstance(s, sp.Symbol):
            return self.leaves[s]
        if s.is_Integer and abs(int(s)) < 2 ** 62:
            return const(int(s))
        if s.is_number:
            v = complex(s.evalf(30))
            if v.imag != 0 or not math.isfinite(v.real):
                raise Unsupported(str(s))
            return const(float(v.real))
        if isinstance(s, sp.Add):
            return self._add(s)
        if isinstance(s, sp.Mul):
            return self._mul(s)
        if isinstance(s, sp.Pow):
            return self._pow(s.base, s.exp)
        if isinstance(s, sp.Piecewise):
            return self._piecewise(s.args)
        if isinstance(s, sp.Heaviside):
            z = self.from_sympy(s.args[0])
            zero = const(0.0)
            return where(binary("gt", z, zero), const(1.0),
                         where(binary("lt", z, zero), const(0.0), const(0.5)))
        if isinstance(s, (sp.Min, sp.Max)):
            op = "min" if isinstance(s, sp.Min) else "max"
            out = self.from_sympy(s.args[0])
            for a in s.args[1:]:
                out = binary(op, out, self.from_sympy(a))
            return out
        for cls, fn in _IR_FN:
            if isinstance(s, cls):
                return call(fn, cast(self.from_sympy(s.args[0]), FLOAT) if fn not in ("abs", "sign")
                            else self.from_sympy(s.args[0]))
        raise Unsupported(type(s).__name__)

    def _add(self, s) -> Expr:
        pos, neg = [], []
        for term in sp.Add.make_args(s):
            coeff, rest = term.as_coeff_Mul()
            (neg if coeff.is_negative else pos).append(-term if coeff.is_negative else term)
        out = None
        for t in pos:
            out = self.from_sympy(t) if out is None else binary("add", out, self.from_sympy(t))
        for t in neg:
            x = self.from_sympy(t)
            out = Unary("neg", x, x.dtype if x.dtype != BOOL else INT) if out is None \
                else binary("sub", out, x)
        return out

    def _mul(self, s) -> Expr:
        num, den = [], []
        for f in sp.Mul.make_args(s):
            if isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative:
                den.append(sp.Pow(f.base, -f.exp))
            elif f.is_Rational and not f.is_Integer and max(abs(f.p), f.q) < 2 ** 31:
                num.append(sp.Integer(f.p))
                den.append(sp.Integer(f.q))
            else:
                num.append(f)
        if num and num[0] == -1:
            rest = sp.Mul(*num[1:], sp.Pow(sp.Mul(*den), -1) if den else 1)
            x = self.from_sympy(rest)
            return Unary("neg", x, x.dtype if x.dtype != BOOL else INT)
        top = None
        for f in num:
            top = self.from_sympy(f) if top is None else binary("mul", top, self.from_sympy(f))
        top = const(1) if top is None else top
        if not den:
            return top
        return binary("truediv", top, self.from_sympy(sp.Mul(*den)))

    def _pow(self, base, exp) -> Expr:
        if base == sp.E:
            return call("exp", cast(self.from_sympy(exp), FLOAT))
        if base == 2 and not exp.is_Integer:
            return call("exp2", cast(self.from_sympy(exp), FLOAT))
        if exp == sp.Rational(1, 2):
            return call("sqrt", cast(self.from_sympy(base), FLOAT))
        if exp == sp.Rational(-1, 2):
            return call("rsqrt", cast(self.from_sympy(base), FLOAT))
        if exp.is_Integer and exp < 0:
            return binary("truediv", const(1.0), self._pow(base, -exp))
        b = self.from_sympy(base)
        if exp == 2:
            return binary("mul", b, b)
        return binary("pow", b, self.from_sympy(exp))

    def _piecewise(self, args) -> Expr:
        (val, cond), rest = args[0], args[1:]
        if cond is sp.true or cond == True:  # noqa: E712 - sympy truth
            return self.from_sympy(val)
        if not rest:
            raise Unsupported("Piecewise without default")
        if isinstance(cond, sp.Eq) and cond.rhs == 1 and cond.lhs in self.leaves:
            c = self.leaves[cond.lhs]
        elif isinstance(cond, sp.Ne) and cond.rhs == 1 and cond.lhs in self.leaves:
            c = Unary("not", self.leaves[cond.lhs], BOOL)
        else:
            raise Unsupported(str(cond))
        a, b = self.from_sympy(val), self._piecewise(rest)
        return where(c, cast(a, FLOAT), cast(b, FLOAT))


_SYMPY_BIN = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "truediv": lambda a, b: a / b, "pow": lambda a, b: a ** b,
    "min": lambda a, b: sp.Min(a, b), "max": lambda a, b: sp.Max(a, b),
}
_SYMPY_FN = {
    "exp": sp.exp, "exp2": lambda x: sp.Integer(2) ** x, "log": sp.log,
    "log2": lambda x: sp.log(x) / sp.log(2), "sqrt": sp.sqrt, "rsqrt": lambda x: 1 / sp.sqrt(x),
    "tanh": sp.tanh, "sigmoid": lambda x: 1 / (1 + sp.exp(-x)), "sin": sp.sin, "cos": sp.cos,
    "abs": sp.Abs, "sign": sp.sign,
}
_IR_FN = [(sp.exp, "exp"), (sp.log, "log"), (sp.tanh, "tanh"), (sp.sin, "sin"), (sp.cos, "cos"),
          (sp.Abs, "abs"), (sp.sign, "sign"), (sp.floor, "floor"), (sp.ceiling, "ceil")]


def derivative(e: Expr, wrt: tuple[Expr, ...]) -> tuple[Expr, ...]:
    """d e / d w for each w in `wrt` (each a Var or Load leaf of `e`)."""
    br = Bridge(piecewise=True)
    s = br.to_sympy(e)
    out = []
    for w in wrt:
        d = sp.diff(s, br.leaf(w))
        out.append(cast(br.from_sympy(d), FLOAT))
    return tuple(out)
