"""Kubernetes ``Status`` failures: one constructor per upstream reason, so every layer (store,
HTTP handlers, clients) raises and reports the same ``ApiError`` with the same body."""

from __future__ import annotations

from typing import Any

from localcluster.apiclient import ApiError, JsonObject


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> JsonObject:
    body: JsonObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def api_error(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> ApiError:
    return ApiError(code, reason, message, status_body(code, reason, message, details))


def _details(resource: str, name: str, group: str = "") -> dict[str, Any]:
    return {"name": name, "group": group, "kind": resource}


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return api_error(
        404, "NotFound", f'{qualified} "{name}" not found', _details(resource, name, group)
    )


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return api_error(
        409,
        "AlreadyExists",
        f'{qualified} "{name}" already exists',
        _details(resource, name, group),
    )


def conflict(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    message = (
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return api_error(409, "Conflict", message, _details(resource, name, group))


# field.ErrorType → the StatusCause reason upstream reports it with
_CAUSE_REASONS = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Unsupported value": "FieldValueNotSupported",
    "Forbidden": "FieldValueForbidden",
    "Duplicate value": "FieldValueDuplicate",
}


def field_cause(problem: str) -> JsonObject:
    """A ``field.Error`` line (``<field>: <Type>[: <detail>]``) as upstream's StatusCause, which
    kubectl prints one per line (``* <field>: <message>``) under "is invalid"."""
    field, _, body = problem.partition(": ")
    kind = body.split(": ", 1)[0]
    return {"reason": _CAUSE_REASONS.get(kind, "FieldValueInvalid"), "message": body,
            "field": field}  # fmt: skip


def invalid(kind: str, name: str, message: str, problems: list[str] | None = None) -> ApiError:
    """422 Invalid; ``problems`` (field.Error lines) also become ``details.causes``."""
    details: JsonObject = {"name": name, "kind": kind}
    if problems:
        details["causes"] = [field_cause(problem) for problem in problems]
    return api_error(422, "Invalid", f'{kind} "{name}" is invalid: {message}', details)


def bad_request(message: str) -> ApiError:
    return api_error(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return api_error(410, "Expired", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return api_error(405, "MethodNotAllowed", message)
