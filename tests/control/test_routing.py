"""Route selection, selection expressions and stage variables (docs/aws-behaviour.md#routing)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.control.model import Route, Snapshot
from proxy.control.routing import (
    evaluate_selection,
    route_table,
    select_route,
    substitute_stage_variables,
    validate_stage_variables,
)
from proxy.errors import BadRequestException, IntegrationError
from proxy.limits import (
    MAX_STAGE_VARIABLE_NAME_CHARS,
    MAX_STAGE_VARIABLE_VALUE_CHARS,
    MAX_STAGE_VARIABLES,
    ROUTE_TABLE_CACHE,
)

CHAT = {"service": "chat", "action": "join"}


# --- AWS's documented examples ----------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$request.body.action", "join"),
        ("${request.body.action}", "join"),
        ("${request.body.service}/${request.body.action}", "chat/join"),
        ("$request.body.service/$request.body.action", "chat/join"),
        ("${request.body.action}-${request.body.nope}", "join-"),
        ("${request.body.action}-beta", "join-beta"),
        ("action", "action"),
        ("\\$default", "$default"),
        ("cost: \\$5 for $request.body.action", "cost: $5 for join"),
        ("$request.body.nope", ""),
    ],
)
def test_reference_examples(expression: str, expected: str) -> None:
    assert evaluate_selection(expression, CHAT) == expected


def test_arrays_and_objects_are_stringified_as_compact_json() -> None:
    body = {"list": [1, "a", None], "obj": {"k": [True, 1.5]}}
    assert evaluate_selection("$request.body.list", body) == '[1,"a",null]'
    assert evaluate_selection("$request.body.obj", body) == '{"k":[true,1.5]}'
    assert evaluate_selection("$request.body", body) == json.dumps(body, separators=(",", ":"))


def test_scalars_read_as_json_and_null_as_unresolved() -> None:
    body = {"n": 7, "f": 0.5, "t": False, "z": None, "s": "x"}
    assert [evaluate_selection(f"$request.body.{k}", body) for k in "nftzs"] == ["7", "0.5", "false", "", "x"]


def test_indexes_and_quoted_keys_walk_into_the_body() -> None:
    body = {"items": [{"id": "a"}, {"id": "b"}], "odd key": "v", "k-1": "dash"}
    assert evaluate_selection("$request.body.items[1].id", body) == "b"
    assert evaluate_selection("${request.body['odd key']}", body) == "v"
    assert evaluate_selection("${request.body.k-1}", body) == "dash"
    assert evaluate_selection("$request.body.items[5].id", body) == ""


def test_evaluation_happens_once() -> None:
    assert evaluate_selection("$request.body.a", {"a": "$request.body.b", "b": "no"}) == "$request.body.b"


def test_non_body_variables_come_from_the_caller() -> None:
    variables = {"integration.response.statuscode": "404"}
    assert evaluate_selection("${integration.response.statuscode}", None, variables=variables) == "404"
    assert evaluate_selection("$integration.response.statuscode/x", None) == "/x"


def test_malformed_expressions_read_as_literal_text() -> None:
    assert evaluate_selection("${request.body.action", CHAT) == "${request.body.action"
    assert evaluate_selection("$", CHAT) == "$"
    assert evaluate_selection("a $ b", CHAT) == "a $ b"
    assert evaluate_selection("${request.body[oops}", CHAT) == ""


def test_a_body_that_is_not_an_object_resolves_nothing() -> None:
    assert evaluate_selection("$request.body.action", None) == ""
    assert evaluate_selection("$request.body.action", ["join"]) == ""
    assert evaluate_selection("$request.body", "plain") == "plain"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=8,
)


@given(body=JSON, expression=st.text(alphabet="${}\\.[]'\"abnoy0_-/ ", max_size=40))
def test_evaluation_never_raises_on_arbitrary_json(body: object, expression: str) -> None:
    assert isinstance(evaluate_selection(expression, body), str)
    assert isinstance(evaluate_selection("$request.body." + expression, body), str)


# --- route selection -----------------------------------------------------------------


def _snapshot(*keys: str, expression: str = "$request.body.action") -> Snapshot:
    routes = {key: Route(route_id=f"r{i}", route_key=key) for i, key in enumerate(keys)}
    return Snapshot(route_selection_expression=expression, routes=routes, integrations={})


def _key(route: Route | None) -> str | None:
    return route.route_key if route is not None else None


def test_a_matching_key_selects_its_route() -> None:
    snapshot = _snapshot("join", "leave", "$default")
    assert _key(select_route(snapshot, '{"action": "join"}')) == "join"
    assert _key(select_route(snapshot, '{"action": "leave", "x": 1}')) == "leave"


def test_lookup_is_exact_and_case_sensitive() -> None:
    snapshot = _snapshot("join", "$default")
    assert _key(select_route(snapshot, '{"action": "Join"}')) == "$default"
    assert _key(select_route(snapshot, '{"action": "join "}')) == "$default"


@pytest.mark.parametrize("message", ["not json", "{", '{"other": 1}', "[1, 2]", '"join"', "", "[" * 100_000])
def test_non_json_or_unmatched_messages_fall_back_to_default(message: str) -> None:
    assert _key(select_route(_snapshot("join", "$default"), message)) == "$default"


def test_binary_messages_go_to_default() -> None:
    assert _key(select_route(_snapshot("join", "$default"), None)) == "$default"


def test_without_default_an_unmatched_message_has_no_route() -> None:
    snapshot = _snapshot("join", "$connect")
    assert select_route(snapshot, '{"action": "nope"}') is None
    assert select_route(snapshot, "not json") is None
    assert select_route(snapshot, None) is None


def test_connect_and_disconnect_never_serve_messages() -> None:
    snapshot = _snapshot("$connect", "$disconnect", "join", "$default")
    assert _key(select_route(snapshot, '{"action": "$connect"}')) == "$default"
    assert _key(select_route(snapshot, '{"action": "$disconnect"}')) == "$default"


def test_default_only_api_routes_everything_to_default() -> None:
    snapshot = _snapshot("$connect", "$default")
    assert _key(select_route(snapshot, "anything at all")) == "$default"
    assert route_table(snapshot).routes == {}


def test_composite_and_literal_expressions_select_routes() -> None:
    composite = _snapshot("chat/join", "$default", expression="${request.body.service}/${request.body.action}")
    assert _key(select_route(composite, json.dumps(CHAT))) == "chat/join"
    literal = _snapshot("fixed", "$default", expression="fixed")
    assert _key(select_route(literal, "not even json")) == "fixed"


def test_the_compiled_table_is_reused_per_snapshot() -> None:
    snapshot = _snapshot("join", "$default")
    assert route_table(snapshot) is route_table(snapshot)
    assert route_table(_snapshot("join", "$default")) is not route_table(snapshot)


# --- stage variables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("ws://${stageVariables.host}:9001/", "ws://backend.internal:9001/"),
        ("ws://${stageVariables.sub}.example.com/", "ws://blue.example.com/"),
        ("ws://h/${stageVariables.path}/chat", "ws://h/v2/chat"),
        ("ws://h/chat?env=${stageVariables.sub}&x=1", "ws://h/chat?env=blue&x=1"),
        ("ws://${stageVariables['host']}/", "ws://backend.internal/"),
        ("ws://plain:1/", "ws://plain:1/"),
    ],
)
def test_stage_variables_substitute_in_host_path_and_query(template: str, expected: str) -> None:
    variables = {"host": "backend.internal", "sub": "blue", "path": "v2"}
    assert substitute_stage_variables(template, variables) == expected


def test_a_missing_stage_variable_fails_the_integration_naming_it() -> None:
    with pytest.raises(IntegrationError, match="'backend'"):
        substitute_stage_variables("ws://${stageVariables.backend}/", {"other": "x"})


def test_valid_stage_variables_pass() -> None:
    validate_stage_variables({"url": "backend.local:9001/path?x=1&y=2#f", "A_1": "a-b.c~d,e"})
    validate_stage_variables({f"v{i}": "x" for i in range(MAX_STAGE_VARIABLES)})


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"bad-name": "x"}, "^Invalid stage variable name: bad-name.  Please use names with only word characters.$"),
        ({"": "x"}, "^Invalid stage variable name: .  "),
        ({"n" * (MAX_STAGE_VARIABLE_NAME_CHARS + 1): "x"}, f"at most {MAX_STAGE_VARIABLE_NAME_CHARS} characters"),
        ({"url": "has space"}, "^Invalid stage variable value: has space.  Please use values with alphanumeric"),
        ({"url": ""}, "^Invalid stage variable value: .  "),
        ({"url": "a" * (MAX_STAGE_VARIABLE_VALUE_CHARS + 1)}, f"at most {MAX_STAGE_VARIABLE_VALUE_CHARS} characters"),
        ({f"v{i}": "x" for i in range(MAX_STAGE_VARIABLES + 1)}, f"A stage may have {MAX_STAGE_VARIABLES}"),
    ],
)
def test_invalid_stage_variables_are_bad_requests(variables: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequestException, match=message):
        validate_stage_variables(variables)


def test_selection_stays_right_when_more_snapshots_than_the_cache_holds() -> None:
    snapshots = [_snapshot(f"k{i}", "$default") for i in range(ROUTE_TABLE_CACHE * 2 + 1)]
    for round_ in range(2):
        for i, snapshot in enumerate(snapshots):
            assert _key(select_route(snapshot, json.dumps({"action": f"k{i}"}))) == f"k{i}", round_
