import re

from proxy import ids


def test_connection_ids_look_like_aws_ones() -> None:
    for value in (ids.connection_id(), ids.pooled_id()):
        assert re.fullmatch(r"[A-Za-z0-9+/]{15}=", value)
    assert len({ids.pooled_id() for _ in range(1000)}) == 1000


def test_api_and_resource_ids_are_lower_alnum_of_aws_length() -> None:
    assert re.fullmatch(r"[a-z0-9]{10}", ids.api_id())
    assert re.fullmatch(r"[a-z0-9]{7}", ids.resource_id())


def test_ids_are_reproducible_from_an_injected_source() -> None:
    def source(n: int) -> bytes:
        return bytes(range(n))

    assert ids.api_id(source) == ids.api_id(source) == "abcdefghij"
    assert ids.connection_id(source) == "AAECAwQFBgcICQo="
