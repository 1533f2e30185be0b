"""The OpenAPI 3 document, generated from the routes and their schemas.

The same marshmallow classes that validate a request describe it here, so
the description cannot drift from what the gateway accepts; and what each
route answers (its success's schema, its error statuses, the headers it
reads) is declared on the route itself (``gateway.http.api``), so this
module matches no route by name.
"""
import re
from functools import lru_cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from gateway import schemas
from gateway.bodies import FORM
from gateway.http import ROUTES

ERROR_TEXT = {400: "Bad input; `details` names each field", 401: "No token, or a bad one",
              403: "Wrong role", 404: "Not found (also: someone else's reservation)",
              409: "Not allowed in the current state", 413: "Body too large",
              415: "The body is not application/json (UTF-8)",
              429: "Rate limited; see Retry-After", 503: "A needed service is unavailable; nothing changed"}
PARAM = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")


def _path(url):
    return PARAM.sub(lambda m: "{" + m.group(3) + "}", url)


def _path_parameters(url):
    out = []
    for converter, arguments, name in PARAM.findall(url):
        if converter == "int":
            schema = {"type": "integer", "minimum": 0}
            bounds = dict(part.strip().split("=") for part in arguments.split(",") if "=" in part)
            schema.update({key: int(bounds[arg]) for key, arg in (("minimum", "min"), ("maximum", "max"))
                           if arg in bounds})
        elif converter == "path":  # an asset's file name: what the web app's files are called
            schema = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[A-Za-z0-9_.\-/]+$"}
        else:
            schema = {"type": "string", "minLength": 1, "maxLength": 200}
            if name.endswith("_id"):
                schema.update(format="uuid", maxLength=36)
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    return out


def _operation(route):
    """One operation, from what its ``@api`` declares (gateway.http.api)."""
    name = route["name"]
    status = str(route.get("status", 200))
    roles = route.get("roles")
    doc = " ".join(route["doc"].split())
    operation = {
        "operationId": name,
        "summary": doc.split(". ")[0].rstrip("."),
        "description": doc + (f"\n\nRoles: {', '.join(sorted(roles))}." if roles else "\n\nNo sign-in needed."),
        "tags": [route.get("tag") or "api"],
        "parameters": _path_parameters(route["url"]),
        "responses": {},
    }
    if roles:
        operation["x-roles"] = sorted(roles)
    if route["response"] is None:
        operation["responses"][status] = {"description": "Done; no content"}
    else:
        operation["responses"][status] = {"description": "OK",
                                          "content": {route["media_type"]: {"schema": route["response"]}}}
    if route.get("query") is not None:
        operation["parameters"].append({"in": "query", "schema": route["query"]})
    operation["parameters"] += route["headers"]
    if route.get("body") is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": route["body"]}}}
    if route.get("form") is not None:
        operation["requestBody"]["content"][FORM] = {"schema": {"oneOf": list(route["form"].values())}}
    errors = set(route["errors"])
    unknown = errors - set(ERROR_TEXT)
    if unknown:
        raise ValueError(f"{name}: no error response {sorted(unknown)} is described")
    if route.get("body") is not None or route.get("query") is not None or operation["parameters"]:
        errors.add(400)
    if route.get("body") is not None:
        errors |= {413, 415}
    if route.get("limit", "default") != "none":
        errors.add(429)
    if roles:
        errors |= {401, 403}
        operation["security"] = [{"oauth2": []}, {"bearer": []}]
    for code in sorted(errors):
        operation["responses"][str(code)] = {"$ref": f"#/components/responses/E{code}"}
    if route.get("form") is not None:  # a form-encoded request's errors are RFC 6749's
        for code in (400, 401):
            operation["responses"][str(code)] = {
                "description": ERROR_TEXT[code] + "; to a form-encoded request, RFC 6749 §5.2's error",
                "content": {"application/json": {"schema": {"anyOf": ["Error", "OAuthError"]}}}}
    return operation


@lru_cache(maxsize=1)
def document():
    spec = APISpec(
        title="Book Rental", version="1.0.0", openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "A library that lends books and delivers them. Every error is "
                             "`{\"error\": {\"code\", \"message\", \"details\"}}`. Sign in with "
                             "`POST /auth/token` (JSON, or an OAuth 2 password grant: see the `oauth2` scheme) "
                             "and send `Authorization: Bearer <token>`; refresh with the refresh token before it "
                             "expires; `POST /auth/logout` ends the session. Access tokens are RS256 JWTs; the "
                             "keys are at `/.well-known/jwks.json`. Each operation names "
                             "the roles it needs (`x-roles`). Bodies are `application/json` (UTF-8, at most "
                             "64 KiB; unknown fields are refused). Requests are rate limited per client address "
                             "and per account, failed sign-ins per address and username: 429 with `Retry-After`."})
    spec.components.security_scheme("oauth2", {
        "type": "oauth2", "description": "OAuth 2 password flow (RFC 6749 §4.3); public clients, no scopes",
        "flows": {"password": {"tokenUrl": "/auth/token", "refreshUrl": "/auth/token", "scopes": {}}}})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=schemas.Error)
    spec.components.schema("OAuthError", schema=schemas.OAuthError)
    for code, text in ERROR_TEXT.items():
        response = {"description": text, "content": {"application/json": {"schema": "Error"}}}
        if code in (429, 503):
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        spec.components.response(f"E{code}", response)
    paths = {}
    for route in ROUTES:
        paths.setdefault(_path(route["url"]), {})[route["method"].lower()] = _operation(route)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
