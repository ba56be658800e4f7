"""DSL front end: parsing, printing round trip, constants, error messages, fuzzing."""
from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import attnforge
from attnforge.dsl import parse
from attnforge.ir import DSLError, print_program
from conftest import EXAMPLE_NAMES, EXAMPLES
from strategies import programs

SLA = """
attention sla(proj: f32[D, D]) {
  select critical = topk(block=64, k=8, per=q_block, pool=mean, force=[own])
  branch exact = softmax(score) on critical
  branch approx = linear(phi=elu1) on ~critical
  normalize shared
  out = exact + approx @ proj
}
"""


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_examples_round_trip(name):
    prog = attnforge.compile(str(EXAMPLES / f"{name}.attn")).ir
    text = print_program(prog)
    assert parse(text) == prog
    assert print_program(parse(text)) == text


def test_branches_selection_and_combiner_round_trip():
    prog = parse(SLA)
    assert [type(s).__name__ for s in prog.selections] == ["TopKSelect"]
    assert [type(b).__name__ for b in prog.branches] == ["SoftmaxBranch", "LinearBranch"]
    assert prog.branches[1].select.negate and prog.combiner.normalizer == "shared"
    assert parse(print_program(prog)) == prog
    g = prog.graph()
    assert set(g.predecessors("out")) == {"exact", "approx", "proj"}
    assert ("critical", "exact") in g.edges


@given(programs())
def test_printer_round_trip(prog):
    assert parse(print_program(prog)) == prog


def test_multiline_let_and_comments():
    prog = parse("""
    # a comment
    attention v(bias: f32[H, 64]) {
      let rel = (q_idx -
                 kv_idx)            # newlines inside brackets are fine
      score = score + bias[h, rel % 64]; mask = rel >= 0
    }""")
    assert "bias[h, (q_idx - kv_idx) % 64]" in print_program(prog)


def test_constants_override_and_errors():
    src = (EXAMPLES / "sliding_window.attn").read_text()
    v = attnforge.compile(src, WINDOW=128)
    assert "q_idx - kv_idx < 128" in v.explain()
    with pytest.raises(DSLError, match="unknown constant.*NOPE"):
        attnforge.compile(src, NOPE=1)
    with pytest.raises(DSLError, match="declared int but got 1.5"):
        attnforge.compile(src, WINDOW=1.5)


def test_python_and_dsl_precedence_agree():
    # comparisons bind looser than `&`, as in Python: `a < b & c` is `a < (b & c)`
    prog = parse("attention v() { mask = q_idx < kv_idx & 7 }")
    assert print_program(prog).count("kv_idx & 7") == 1


# (source, line, col, message fragment)
ERRORS = [
    ("attention v() {\n  mask = (q_idx >= kv_idx\n}\n", 2, 10, "unclosed `(`"),
    ("attention v() {\n  mask = q_idx >= kv_idx)\n}\n", 2, 25, "unmatched `)`"),
    ("attention v() {\n  mask = 1 < q_idx < 5\n}\n", 2, 20, "comparisons cannot be chained"),
    ("attention v() {\n  mask = q_idx >= kv_idx and b\n}\n", 2, 26, "`and`, `or`"),
    ("attention v() {\n  mask = q_idx >= foo\n}\n", 2, 19, "unknown name `foo`"),
    ("attention v() {\n  score = score + bias[h]\n}\n", 2, 19, "unknown tensor `bias`"),
    ("attention v(bias: f32[H, 8]) {\n  score = score + bias[h]\n}\n", 2, 19,
     "has 2 dimension(s) but is indexed with 1"),
    ("attention v(bias: f32[H]) {\n  score = score + bias\n}\n", 2, 19, "tensor of rank 1"),
    ("attention v() {\n  mask = q_idx + kv_idx\n}\n", None, None, "must be bool"),
    ("attention v() {\n  mask = q_idx @ kv_idx\n}\n", 2, 10, "`@` combines"),
    ("attention v() {\n  score = score & 1\n}\n", 2, 11, "needs bool or int operands"),
    ("attention v() {\n  score = foo(score)\n}\n", 2, 11, "unknown function `foo`"),
    ("attention v() {\n  score = exp(score, 2)\n}\n", 2, 11, "takes 1 argument"),
    ("attention v(x: f99[H]) {\n}\n", 1, 16, "unknown tensor type `f99`"),
    ("attention v() {\n  const W: int = q_idx\n}\n", 2, 18, "needs a literal"),
    ("attention v() {\n  mask = q_idx $ kv_idx\n}\n", 2, 16, "unexpected character `$`"),
    ("attention v() {\n  score score\n}\n", 2, 9, "a statement needs `=`"),
    ("attention v() {\n  foo = 1\n}\n", 2, 3, "unknown statement"),
    ("attention v() {\n  branch a = softmax(score) on nope\n}\n", None, None, "unknown selection `nope`"),
    ("attention v() {\n  score = score\n", 1, 15, "unclosed `{`"),
    ("attention v() {\n  let q_idx = 3\n}\n", 2, 7, "would hide"),
]


@pytest.mark.parametrize("src,line,col,fragment", ERRORS, ids=[e[3][:30] for e in ERRORS])
def test_error_messages(src, line, col, fragment):
    with pytest.raises(DSLError) as info:
        parse(src, file="model.attn")
    msg = str(info.value)
    assert fragment in msg, msg
    assert not re.search(r"attnforge[/\\]", msg), msg
    if line is not None:
        assert msg.startswith(f"model.attn:{line}:{col}: error: "), msg
        caret_line = msg.splitlines()[2]
        assert caret_line.index("^") - 4 == col - 1, msg


def test_unclosed_bracket_caret_points_at_the_bracket():
    src = "attention v() {\n  mask = where(q_idx > 3, (kv_idx < 2, true)\n}\n"
    with pytest.raises(DSLError) as info:
        parse(src)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("<string>:2:15: error: unclosed `(`")
    assert lines[1] == "    " + src.splitlines()[1]
    assert lines[2] == "    " + " " * 14 + "^"


def _tokens(text):
    return re.findall(r"\d+\.\d+|\w+|[<>=!]=|//|\*\*|<<|>>|\S", text)


def _mutate(text: str, rng: random.Random) -> str:
    toks = _tokens(text)
    i, j = rng.randrange(len(toks)), rng.randrange(len(toks))
    op = rng.choice(["delete", "duplicate", "swap", "replace"])
    if op == "delete":
        del toks[i]
    elif op == "duplicate":
        toks.insert(i, toks[j])
    elif op == "swap":
        toks[i], toks[j] = toks[j], toks[i]
    else:
        toks[i] = rng.choice(["(", ")", "[", "]", "&", "|", "~", "-", "score", "1.5", "0x1F", "h",
                              "where", ",", ";", "\n", "{", "}", "let", "const", "=", "**"])
    return " ".join(toks).replace(" \n ", "\n")


SEEDS = [(EXAMPLES / f"{n}.attn").read_text() for n in EXAMPLE_NAMES] + [SLA]


@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False), st.integers(1, 3))
def test_fuzz_mutated_dsl_raises_dslerror_or_compiles(seed, rng, n):
    text = seed
    for _ in range(n):
        text = _mutate(text, rng)
    try:
        attnforge.compile(text)
    except DSLError as err:
        assert "internal compiler error" not in str(err), str(err)


@given(st.text(alphabet=st.sampled_from(list("attention(){}[]<>=&|~+-*/%,:;_ \nqkvidxbhscore0123.")),
               max_size=80))
def test_fuzz_random_text(text):
    try:
        parse(text)
    except DSLError as err:
        assert "internal compiler error" not in str(err), str(err)
