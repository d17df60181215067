"""Parsing the VTL subset: what compiles, what stays literal, what is an error."""

from __future__ import annotations

import pytest

from proxy.control.vtl import Const, Foreach, If, Ref, Set, compile_template
from proxy.errors import IntegrationError


def test_plain_text_is_one_literal() -> None:
    assert compile_template('{"statusCode": 200}') == ('{"statusCode": 200}',)
    assert compile_template("") == ()


def test_references_split_the_text() -> None:
    nodes = compile_template("a $input.body b")
    assert nodes[0] == "a " and nodes[2] == " b"
    reference = nodes[1]
    assert isinstance(reference, Ref) and reference.root == "input" and reference.source == "$input.body"


def test_text_that_only_looks_like_vtl_stays_literal() -> None:
    assert compile_template("cost $5 #1 #ifx ${unclosed") == ("cost $5 #1 #ifx ${unclosed",)


def test_directives_build_a_tree() -> None:
    (set_node, if_node, loop) = compile_template("#set($a = 1)#if($a == 1)x#{else}y#end#foreach($i in $a)z#end")
    assert set_node == Set("a", Const(1))
    assert isinstance(if_node, If) and if_node.branches[0][1] == ("x",) and if_node.otherwise == ("y",)
    assert isinstance(loop, Foreach) and loop.name == "i" and loop.body == ("z",)


def test_literals_in_expressions() -> None:
    (node,) = compile_template("#set($v = 'single')")
    assert node == Set("v", Const("single"))
    values = [compile_template(f"#set($v = {text})")[0] for text in ('"double"', "-2", "1.5", "true", "null")]
    assert [node.value for node in values if isinstance(node, Set)] == [
        Const("double"),
        Const(-2),
        Const(1.5),
        Const(True),
        Const(None),
    ]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("#if($a)x", "#if without #end"),
        ("#foreach($a in $b)x", "#foreach without #end"),
        ("x#end", "#end without"),
        ("#else", "#else without"),
        ("#if $a)x#end", "expected '\\('"),
        ("#set(a = 1)", "expected '\\$'"),
        ("#set($a 1)", "expected '='"),
        ("#if($a == )x#end", "expected a value"),
        ("#foreach($a of $b)#end", "expected 'in'"),
        ("#* never closed", "unterminated"),
    ],
)
def test_malformed_directives_fail_the_integration(template: str, message: str) -> None:
    with pytest.raises(IntegrationError, match=message):
        compile_template(template)


def test_absurd_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(IntegrationError, match="too deep"):
        compile_template("#if(" + "(" * 100_000 + "1" + ")" * 100_000 + ")x#end")
