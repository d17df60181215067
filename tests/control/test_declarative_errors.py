"""A --config document is refused whole, naming file, line and key, before anything is applied."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.control.catalog import MemoryCatalog
from proxy.control.declarative import (
    DocumentError,
    apply_document,
    check_document,
    export_document,
    load_document,
)
from proxy.control.service import ControlService
from proxy.store.sqlite import SqliteStore
from tests.control.test_declarative import CONFIG_YAML

Document = dict[str, Any]


def _api(doc: Document) -> Document:
    api: Document = doc["apis"][0]
    return api


TYPOS: dict[str, tuple[str, Callable[[Document], None]]] = {
    "top": ("apiz", lambda d: d.update(apiz=[])),
    "api": ("routeSelectionExpresion", lambda d: _api(d).update(routeSelectionExpresion="x")),
    "route": ("routekey", lambda d: _api(d)["routes"][0].update(routekey="x")),
    "integration": ("integrationUrl", lambda d: _api(d)["routes"][0]["integration"].update(integrationUrl="ws://x")),
    "integration-response": (
        "responseKey",
        lambda d: _api(d)["routes"][1]["integration"]["integrationResponses"][0].update(responseKey=1),
    ),
    "route-response": (
        "routeResponseKy",
        lambda d: _api(d)["routes"][0]["routeResponses"][0].update(routeResponseKy=1),
    ),
    "stage": ("variables", lambda d: _api(d)["stages"][0].update(variables={})),
    "default-route-settings": ("burst", lambda d: _api(d)["stages"][1]["defaultRouteSettings"].update(burst=1)),
    "route-settings": (
        "throttlingRate",
        lambda d: _api(d)["stages"][1].update(routeSettings={"ping": {"throttlingRate": 1}}),
    ),
    "access-log-settings": (
        "destination",
        lambda d: _api(d)["stages"][0].update(accessLogSettings={"destination": "stdout"}),
    ),
    "domain": ("certificate", lambda d: d["domainNames"][0].update(certificate="x")),
    "api-mapping": ("path", lambda d: d["domainNames"][0]["apiMappings"][0].update(path="v2")),
}


@pytest.mark.parametrize("where", list(TYPOS))
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_an_unknown_key_anywhere_is_refused_with_file_line_and_key(tmp_path: Path, where: str, suffix: str) -> None:
    document = copy.deepcopy(yaml.safe_load(CONFIG_YAML))
    typo, spoil = TYPOS[where]
    spoil(document)
    path = tmp_path / f"api{suffix}"
    text = json.dumps(document, indent=1) if suffix == ".json" else yaml.safe_dump(document)
    path.write_text(text)
    with pytest.raises(DocumentError) as refused:
        load_document(path)
    message = str(refused.value)
    line = next(n for n, content in enumerate(text.splitlines(), 1) if f"{typo}" in content)
    assert message.startswith(f"{path}:{line}: unknown key {typo!r}"), message


def test_a_document_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- apis\n")
    with pytest.raises(DocumentError, match="expected a mapping"):
        load_document(path)


def test_check_document_applies_to_a_scratch_copy_only(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "live.db")
    try:
        service = ControlService(store, MemoryCatalog(), clock=lambda: "t")
        apply_document(service, yaml.safe_load(CONFIG_YAML))
        before = export_document(service)
        changed = yaml.safe_load(CONFIG_YAML)
        _api(changed)["stages"][0]["description"] = "checked, not applied"
        check_document(service, changed, "api.yaml")
        assert export_document(service) == before
        refused = yaml.safe_load(CONFIG_YAML)
        _api(refused)["routes"][0]["integration"]["integrationType"] = "CARRIER_PIGEON"
        with pytest.raises(DocumentError, match=r"^api\.yaml: "):
            check_document(service, refused, "api.yaml")
        assert export_document(service) == before
    finally:
        store.close()
