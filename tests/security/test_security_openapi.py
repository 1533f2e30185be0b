"""The OpenAPI document (API9, inventory): valid OpenAPI 3, and it describes
every route with its body, answers, errors, security schemes (the OAuth 2
password flow, and plain bearer) and roles."""
import pytest
from openapi_spec_validator import validate

import gateway.service  # noqa: F401  (declares the routes)
from gateway import openapi
from gateway.http import ROUTES, api


@pytest.fixture(scope="module")
def document():
    return openapi.document()


def _operation(document, route):
    return document["paths"][openapi._path(route["url"])][route["method"].lower()]


def _schema(document, ref_or_schema):
    if "$ref" in ref_or_schema:
        return document["components"]["schemas"][ref_or_schema["$ref"].rsplit("/", 1)[1]]
    return ref_or_schema


def _response(document, ref_or_response):
    if "$ref" in ref_or_response:
        return document["components"]["responses"][ref_or_response["$ref"].rsplit("/", 1)[1]]
    return ref_or_response


def test_the_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    oauth2 = document["components"]["securitySchemes"]["oauth2"]
    assert oauth2["type"] == "oauth2"
    assert oauth2["flows"] == {"password": {"tokenUrl": "/auth/token", "refreshUrl": "/auth/token", "scopes": {}}}


def test_the_token_endpoint_takes_json_and_oauth2_form_requests(document):
    operation = document["paths"]["/auth/token"]["post"]
    content = operation["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Credentials"}
    grants = [_schema(document, ref) for ref in content["application/x-www-form-urlencoded"]["schema"]["oneOf"]]
    assert [grant["properties"]["grant_type"]["enum"] for grant in grants] == [["password"], ["refresh_token"]]
    assert sorted(grants[0]["required"]) == ["grant_type", "password", "username"]
    assert sorted(grants[1]["required"]) == ["grant_type", "refresh_token"]
    token = _schema(document, operation["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(token["required"]) == {"access_token", "token_type", "expires_in", "refresh_token"}
    for status in ("400", "401"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == {"anyOf": [
            {"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/OAuthError"}]}


def test_every_route_is_described(document):
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    declared = {(route["method"], openapi._path(route["url"])) for route in ROUTES}
    assert declared == described


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r["name"])
def test_each_operation_names_its_roles_answers_and_errors(document, route):
    operation = _operation(document, route)
    responses = operation["responses"]
    success = str(route.get("status", 200))
    assert success in responses and (responses[success].get("content") or success == "204"), route["name"]
    if route.get("roles"):
        assert operation["security"] == [{"oauth2": []}, {"bearer": []}]
        assert operation["x-roles"] == sorted(route["roles"])
        assert "Roles: " + ", ".join(sorted(route["roles"])) in operation["description"]
        assert {"401", "403"} <= set(responses)
    else:
        assert "security" not in operation
        assert "No sign-in needed" in operation["description"]
    if route.get("body") is not None:
        assert operation["requestBody"]["content"]["application/json"]["schema"]
        assert {"400", "413", "415"} <= set(responses)
    if route.get("limit", "default") != "none":
        assert "429" in responses
        assert "Retry-After" in _response(document, responses["429"])["headers"]
    for status, response in responses.items():
        if status.startswith(("4", "5")) and not (route.get("form") and status in ("400", "401")):
            content = _response(document, response)["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/Error"}


def _request_schemas(document):
    for route in ROUTES:
        if route.get("body") is not None:
            body = _operation(document, route)["requestBody"]["content"]["application/json"]["schema"]
            yield route["name"], _schema(document, body)


def test_request_bodies_refuse_unknown_fields_and_bound_every_value(document):
    for name, schema in _request_schemas(document):
        assert schema["additionalProperties"] is False, name
        for field, spec in schema["properties"].items():
            if spec.get("type") == "string":
                assert "maxLength" in spec or "pattern" in spec or "enum" in spec, (name, field)
                if "pattern" in spec and "maxLength" not in spec:
                    assert "}$" in spec["pattern"], (name, field)  # a bounded repetition
            elif spec.get("type") == "integer":
                assert "minimum" in spec and "maximum" in spec, (name, field)
            else:
                pytest.fail(f"{name}.{field}: {spec}")


def test_every_parameter_is_typed_and_bounded(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                assert schema.get("type") in ("string", "integer"), (path, method, parameter)
                if schema["type"] == "integer":
                    assert "minimum" in schema and "maximum" in schema, (path, parameter)
                elif parameter["in"] != "path" or parameter["name"] != "path":
                    assert {"maxLength", "pattern", "enum"} & set(schema), (path, parameter)


def test_a_route_declares_what_it_answers():
    """What the document says of a route comes from its ``@api`` (issue #15):
    none is described by a guess from its name."""
    with pytest.raises(ValueError, match="response schema"):
        api("GET", "/nothing-declared")
    with pytest.raises(ValueError, match="response schema"):
        api("POST", "/no-content", status=204, response=openapi.schemas.Health)
    route = {"method": "GET", "url": "/x", "name": "x", "doc": "X.", "response": openapi.schemas.Health,
             "media_type": "application/json", "errors": (418,), "headers": ()}
    with pytest.raises(ValueError, match="418"):
        openapi._operation(route)
    for route in ROUTES:
        assert route["response"] is not None or route.get("status") == 204, route["name"]
