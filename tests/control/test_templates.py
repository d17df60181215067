"""The VTL subset mapping templates use (docs/aws-behaviour.md#integrations)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.control.templates import escape_javascript, render_template, select_template
from proxy.errors import IntegrationError

BODY = '{"action": "send", "message": "hi \\"you\\"", "data": {"items": [1, {"id": "b"}]}, "nothing": null}'
CONTEXT = {
    "$context.connectionId": "KVmb8fjMIAMCFgQ=",
    "$context.identity.sourceIp": "127.0.0.1",
    "$context.stage": "dev",
}
STAGE_VARIABLES = {"env": "blue", "region": "eu"}


def render(template: str, body: str = BODY) -> str:
    return render_template(template, body=body, context=CONTEXT, stage_variables=STAGE_VARIABLES)


def test_plain_text_and_json_pass_unchanged() -> None:
    assert render('{"statusCode": 200}') == '{"statusCode": 200}'
    assert render("") == ""
    assert render("cost: $5 and #hash") == "cost: $5 and #hash"


def test_input_body_is_the_raw_message() -> None:
    assert render("$input.body") == BODY
    assert render("${input.body}", body="not json") == "not json"


def test_input_json_yields_json_text() -> None:
    assert render("$input.json('$.action')") == '"send"'
    assert render("$input.json('$.data.items')") == '[1,{"id":"b"}]'
    assert json.loads(render("$input.json('$')")) == json.loads(BODY)
    assert render("$input.json('$.missing')") == ""


def test_input_path_yields_the_value() -> None:
    assert render("$input.path('$.action')") == "send"
    assert render("$input.path('$.data.items[1].id')") == "b"
    assert render("$input.path('$.data')") == '{"items":[1,{"id":"b"}]}'
    assert render("[$input.path('$.nothing')]") == "[]"
    assert render("$input.path('$.action')", body="not json") == "$input.path('$.action')"


def test_context_variables_render_and_trailing_text_stays() -> None:
    assert render('{"id": "$context.connectionId"}') == '{"id": "KVmb8fjMIAMCFgQ="}'
    assert render("${context.identity.sourceIp}") == "127.0.0.1"
    assert render("stage $context.stage.") == "stage dev."


def test_stage_variables_in_all_three_spellings() -> None:
    assert render("$stageVariables.env/$stageVariables['region']/${stageVariables['env']}") == "blue/eu/blue"
    assert render("[$stageVariables.undefined]") == "[]"


def test_unresolved_references_render_as_written_unless_quiet() -> None:
    assert render("$context.unknownThing") == "$context.unknownThing"
    assert render("[$!context.unknownThing]") == "[]"
    assert render("$foo.bar $input.nope") == "$foo.bar $input.nope"


def test_util_helpers() -> None:
    assert render("$util.escapeJavaScript($input.path('$.message'))") == 'hi \\"you\\"'
    assert render("$util.urlEncode('a b/c~*')") == "a+b%2Fc%7E*"
    assert render("$util.urlDecode('a+b%2Fc')") == "a b/c"
    assert render("$util.base64Encode('héllo')") == "aMOpbGxv"
    assert render('$util.base64Decode("aMOpbGxv")') == "héllo"
    assert render("$util.parseJson($input.body).data.items[1].id") == "b"
    assert render("$util.parseJson( $input.json('$.data') ).items[0]") == "1"


def test_escape_javascript_follows_java_rules() -> None:
    assert escape_javascript("it's \\ /\n\t") == "it\\'s \\\\ \\/\\n\\t"
    assert escape_javascript("é\x01") == "\\u00E9\\u0001"
    assert escape_javascript("😀") == "\\uD83D\\uDE00"


@pytest.mark.parametrize("template", ["$util.parseJson('{nope')", "$util.base64Decode('***')"])
def test_bad_input_to_a_helper_fails_the_integration(template: str) -> None:
    with pytest.raises(IntegrationError, match=r"\$util\."):
        render(template)


def test_a_realistic_reply_template() -> None:
    template = (
        '{"from": "$context.connectionId", "said": $input.json(\'$.message\'), '
        '"env": "$stageVariables.env", "n": $input.path(\'$.data.items[0]\')}'
    )
    assert json.loads(render(template)) == {"from": "KVmb8fjMIAMCFgQ=", "said": 'hi "you"', "env": "blue", "n": 1}


def test_malformed_references_stay_literal() -> None:
    assert render("${input.body") == "${input.body"
    assert render("$input.json('$.action'") == "$input.json('$.action'"
    assert render("$util.urlEncode(") == "$util.urlEncode("


# --- directives -------------------------------------------------------------------------


def test_if_else_picks_the_status_a_mock_returns() -> None:
    template = '#if($input.path(\'$.action\') == "send"){"statusCode": 200}#else{"statusCode": 400}#end'
    assert render(template) == '{"statusCode": 200}'
    assert render(template, body='{"action": "other"}') == '{"statusCode": 400}'
    assert render(template, body="not json") == '{"statusCode": 400}'


def test_set_elseif_and_numeric_comparison() -> None:
    template = "#set($n = $input.path('$.n'))#if($n >= 10)big#elseif($n > 1 && $n != 3)mid#{else}small#{end}"
    results = [render(template, body=json.dumps({"n": n})) for n in (12, 5, 3, 1)]
    assert results == ["big", "mid", "small", "small"]


def test_conditions_treat_only_null_and_false_as_false() -> None:
    template = "#if($input.path('$.v'))T#{else}F#end"
    values = ['""', "0", "[]", "false", "null", '"x"']
    assert [render(template, body=f'{{"v": {v}}}') for v in values] == ["T", "T", "T", "F", "F", "T"]
    assert render(template, body="{}") == "F"
    assert render("#if(!$input.path('$.v') || false)yes#end", body="{}") == "yes"


def test_foreach_builds_a_json_array() -> None:
    template = "[#foreach($item in $input.path('$.data.items'))$item#if($foreach.hasNext),#end#end]"
    assert json.loads(render(template)) == [1, {"id": "b"}]
    indexed = '#foreach($k in $util.parseJson(\'["a","b"]\'))$foreach.count:$k #end'
    assert render(indexed) == "1:a 2:b "
    assert render("#foreach($x in $input.path('$.missing'))never#end") == ""


def test_comments_render_nothing() -> None:
    assert render("a## to the end of the line\nb#* a\nblock *#c") == "abc"


def test_set_variables_render_like_references() -> None:
    assert render("#set($who = $context.connectionId)#set($n = 2)$who/$n/$!nobody/$nobody") == (
        "KVmb8fjMIAMCFgQ=/2//$nobody"
    )


def test_runaway_loops_fail_the_integration() -> None:
    body = json.dumps({"a": list(range(200))})
    template = "#foreach($x in $input.path('$.a'))#foreach($y in $input.path('$.a'))#end#end"
    with pytest.raises(IntegrationError, match="#foreach"):
        render(template, body=body)


VTL_ALPHABET = "$#!{}()[].,'\"=<>&|*\n abinputjsonpathcontextstageVariablesutilsetifelseendforeach0123456789"


@given(template=st.text(alphabet=VTL_ALPHABET, max_size=60), body=st.text(max_size=20))
def test_any_template_renders_or_fails_as_an_integration_error(template: str, body: str) -> None:
    try:
        rendered = render(template, body=body)
    except IntegrationError as error:
        assert str(error).startswith(("Mapping template", "$util."))
    else:
        assert isinstance(rendered, str)


# --- template selection ---------------------------------------------------------------------


def test_select_template_by_body_key_then_default() -> None:
    templates = {"join": "J", "$default": "D"}
    assert select_template(templates, "$request.body.action", '{"action": "join"}') == "J"
    assert select_template(templates, "$request.body.action", '{"action": "other"}') == "D"
    assert select_template(templates, "$request.body.action", "not json") == "D"
    assert select_template(templates, None, '{"action": "join"}') == "D"
    assert select_template(templates, "\\$default") == "D"


def test_select_template_without_a_match_or_templates_is_none() -> None:
    assert select_template({"join": "J"}, "$request.body.action", '{"action": "x"}') is None
    assert select_template({}, "$request.body.action", '{"action": "join"}') is None


def test_select_template_reads_response_variables() -> None:
    templates = {"404": "missing", "$default": "other"}
    status = {"integration.response.statuscode": "404"}
    assert select_template(templates, "${integration.response.statuscode}", variables=status) == "missing"
