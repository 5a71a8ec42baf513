"""Meilisearch's published OpenAPI description (shared/specs), with its 14 known errors corrected
(shared/specs/README.md, numbered as there), and request/response validation with openapi-core.

Only those corrections are applied, on a copy: the double in meili_double.py is held to what the
real server accepts and answers, not to a dialect of its own.
"""
from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

SPEC = Path("shared/specs/meilisearch-openapi-1.15.2.json")  # found beside the repository (or in it)
for _base in Path(__file__).resolve().parents:
    if (_base / "shared" / "specs" / "meilisearch-openapi-1.15.2.json").exists():
        SPEC = _base / "shared" / "specs" / "meilisearch-openapi-1.15.2.json"
        break

ERROR = {"$ref": "#/components/schemas/ResponseError"}


def need(module: str):
    """Import a module the Meilisearch tests need: skipped when missing, except in CI
    (scripts/setup --test installs it there, and a skip would hide that it did not)."""
    import importlib
    import os

    import pytest

    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def corrected(spec: dict) -> dict:
    """A copy of the description with the README's 14 corrections applied."""
    d = copy.deepcopy(spec)
    S = d["components"]["schemas"]
    paths = d["paths"]
    # 7. the batch delete route lives under /documents
    paths["/indexes/{indexUid}/documents/delete-batch"] = paths.pop("/indexes/{indexUid}/delete-batch")
    for path, item in paths.items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            res = op["responses"]
            # 1. routes that create a task answer 202
            ok = res.get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if ok.get("$ref", "").endswith("/SummarizedTaskView"):
                res["202"] = res.pop("200")
            # 2. any route can answer the error envelope
            res["default"] = {"description": "error", "content": {"application/json": {"schema": ERROR}}}
            for p in op.get("parameters", []):
                if p.get("in") == "query":
                    p["required"] = False  # 4. no query parameter is required
                    sch = p.get("schema", {})
                    if "array" in (sch.get("type") if isinstance(sch.get("type"), list) else [sch.get("type")]):
                        p["style"], p["explode"] = "form", False  # 5. comma-separated lists
            # 10. single-setting routes take JSON; their DELETE takes no body
            if path.startswith("/indexes/{indexUid}/settings/"):
                if method == "delete":
                    op.pop("requestBody", None)
                elif "requestBody" in op:
                    content = op["requestBody"]["content"]
                    schema = next(iter(content.values())).get("schema", {})
                    op["requestBody"]["content"] = {"application/json": {"schema": schema}}
    # 3. SearchQuery in camelCase, every field optional; SearchQueryWithIndex needs only indexUid
    for name in ("SearchQuery", "SearchQueryWithIndex"):
        s = S.get(name)
        if s and "properties" in s:
            s["properties"] = {_camel(k): v for k, v in s["properties"].items()}
            s["required"] = ["indexUid"] if name == "SearchQueryWithIndex" else []
            if not s["required"]:
                s.pop("required")
    # 6. BrowseQuery fields have defaults
    S["BrowseQuery"].pop("required", None)
    # 8. a task's details may be any detail object; 9. startedAt/finishedAt are null until then
    tv = S["TaskView"]["properties"]
    tv["details"] = {"type": ["object", "null"]}
    for k in ("startedAt", "finishedAt"):
        tv[k] = {**tv[k], "type": ["string", "null"]}
    # 11. AttributePatterns is an array of strings
    S["AttributePatterns"] = {"type": "array", "items": {"type": "string"}}
    # 12. localizedAttributes, distinctAttribute, searchCutoffMs read back as null when unset
    for name in ("Settings_Unchecked", "Settings_Checked"):
        props = S.get(name, {}).get("properties", {})
        for k in ("localizedAttributes", "distinctAttribute", "searchCutoffMs"):
            if k in props and "type" in props[k] and isinstance(props[k]["type"], str):
                props[k]["type"] = [props[k]["type"], "null"]
    # 13. ranking rules are strings
    if "RankingRuleView" in S:
        S["RankingRuleView"] = {"type": "string"}
    # 14. multi-search without federation answers {"results": [...]}
    ms = paths.get("/multi-search", {}).get("post", {}).get("responses", {})
    for code in ("200",):
        if code in ms:
            sch = ms[code]["content"]["application/json"]["schema"]
            ms[code]["content"]["application/json"]["schema"] = {"oneOf": [sch, {
                "type": "object", "required": ["results"],
                "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/SearchResult"}}}}]}
    return d


@lru_cache(maxsize=1)
def spec() -> dict:
    """The corrected description (a dict)."""
    return corrected(json.loads(SPEC.read_text()))


@lru_cache(maxsize=1)
def openapi():
    """The corrected description as an openapi-core app (self-validation off: the file fails it)."""
    from openapi_core import Config, OpenAPI

    return OpenAPI.from_dict(spec(), config=Config(spec_validator_cls=None))


def _request(method: str, url: str, headers: dict, body: bytes):
    import requests
    from openapi_core.contrib.requests import RequestsOpenAPIRequest

    req = requests.Request(method.upper(), url, headers=headers, data=body or None).prepare()
    return RequestsOpenAPIRequest(req)


def check_request(method: str, url: str, headers: dict, body: bytes) -> str | None:
    """None when the request is valid for the described API, else why not."""
    try:
        openapi().validate_request(_request(method, url, headers, body))
    except Exception as e:  # noqa: BLE001 - openapi-core raises a family of errors
        return _why(e)
    return None


def check_response(method: str, url: str, headers: dict, body: bytes, status: int, resp_body: bytes) -> str | None:
    """None when the response is valid for the described API, else why not."""
    import requests
    from openapi_core.contrib.requests import RequestsOpenAPIResponse

    resp = requests.Response()
    resp.status_code = status
    resp._content = resp_body
    resp.headers["Content-Type"] = "application/json"
    try:
        openapi().validate_response(_request(method, url, headers, body), RequestsOpenAPIResponse(resp))
    except Exception as e:  # noqa: BLE001
        return _why(e)
    return None


def _why(e: BaseException) -> str:
    parts = [f"{type(e).__name__}: {e}"]
    for sub in getattr(e, "schema_errors", None) or getattr(getattr(e, "__cause__", None), "schema_errors", None) or []:
        parts.append(f"  {list(sub.absolute_path)}: {sub.message}")
    return "\n".join(parts)
