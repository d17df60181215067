"""Model values <-> plain JSON-able dicts, driven by the dataclasses' type hints.

Layer 2 (sans-IO). One converter serves two spellings: the store keeps
snake_case records (``same``), ``control.wire`` speaks camelCase (``camel``).
Conversion is type-directed, so a ``Mapping[str, X]`` field keeps its keys
verbatim (route keys, stage-variable names, tag keys) while a nested dataclass
gets its member names respelled. A value of the wrong type raises
``BadRequestException`` naming the member, which is what AWS answers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any, TypeVar, Union

from proxy.errors import BadRequestException

T = TypeVar("T")
Spelling = Callable[[str], str]


def same(name: str) -> str:
    """The store's spelling: field names as they are."""
    return name


@cache
def camel(name: str) -> str:
    """The wire's spelling: ``route_selection_expression`` -> ``routeSelectionExpression``."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def to_plain(value: object, spell: Spelling = same, skip: Iterable[str] = ()) -> Any:
    """A JSON-able form of ``value``; ``None`` members are left out, as AWS omits unset members.

    Args:
        value: a model dataclass, mapping, tuple or scalar.
        spell: how dataclass member names are written.
        skip: top-level member names to leave out (nested children, snapshots).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        omitted = set(skip)
        return {
            spell(f.name): to_plain(getattr(value, f.name), spell)
            for f in dataclasses.fields(value)
            if f.name not in omitted and getattr(value, f.name) is not None
        }
    if isinstance(value, Mapping):
        return {key: to_plain(item, spell) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(item, spell) for item in value]
    return value


def from_plain(cls: type[T], data: Mapping[str, Any], spell: Spelling = same) -> T:
    """Build a whole ``cls`` from a plain dict; missing members take their defaults."""
    return cls(**fields_from_plain(cls, data, spell))


def fields_from_plain(cls: type, data: Mapping[str, Any], spell: Spelling = same) -> dict[str, Any]:
    """Typed values for the members of ``cls`` present in ``data`` (unknown keys are ignored).

    Raises:
        BadRequestException: a present member has the wrong type.
    """
    if not isinstance(data, Mapping):
        raise BadRequestException(f"Expected an object for {cls.__name__}")
    out: dict[str, Any] = {}
    for name, hint in _hints(cls).items():
        key = spell(name)
        if key in data:
            out[name] = _decode(hint, data[key], key, spell)
    return out


def _decode(hint: Any, value: Any, where: str, spell: Spelling) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _decode(inner, value, where, spell)
    if hint is Any or hint is object:
        return value
    if dataclasses.is_dataclass(hint):
        assert isinstance(hint, type)
        return from_plain(hint, _expect(value, Mapping, where), spell)
    if origin is Mapping or origin is dict:
        _, item = typing.get_args(hint)
        items = _expect(value, Mapping, where)
        return {_expect(k, str, where): _decode(item, v, f"{where}.{k}", spell) for k, v in items.items()}
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_decode(item, v, where, spell) for v in _expect(value, list | tuple, where))
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise BadRequestException(f"Invalid value for {where}: expected {getattr(hint, '__name__', hint)}")


def _expect(value: Any, kind: Any, where: str) -> Any:
    if not isinstance(value, kind):
        raise BadRequestException(f"Invalid value for {where}")
    return value
