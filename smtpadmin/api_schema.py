"""What the OpenAPI schema says beyond drf-spectacular's defaults, so that it is true of the
API: request bodies that refuse unknown fields, empty lists and blank text, list filters with
their limits, and the error answers of every operation. The errors come from a postprocessing
hook (``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``), so a new endpoint documents them
without annotations: what an operation can answer follows from its view (authentication,
permissions, throttles, which of create/update/destroy it is) and from its parameters."""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.django_filters import DjangoFilterExtension
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from rest_framework.generics import GenericAPIView


class StrictFieldsExtension(OpenApiSerializerExtension):
    """Request bodies of ``StrictFieldsMixin`` serializers say that unknown fields are
    refused, as they are."""

    target_class = "smtpadmin.api.StrictFieldsMixin"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
            # drf-spectacular leaves out that a list may not be empty.
            for name, field in self.target.fields.items():
                prop = schema.get("properties", {}).get(name, {})
                if getattr(field, "allow_empty", True) is False and prop.get("type") == "array":
                    prop.setdefault("minItems", 1)
        return schema


#: What a text field trims and then finds blank (Python's whitespace), as a pattern any
#: validator reads the same way: one character that is not whitespace.
NOT_BLANK = "[^\\s\\x1c-\\x1f\\x85]|\\ufeff"


class TrimmedTextExtension(OpenApiSerializerFieldExtension):
    """A text field that trims whitespace and may not be blank refuses "  " too: its request
    schema says so."""

    target_class = "rest_framework.fields.CharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        field = self.target
        schema = auto_schema._map_serializer_field(field, direction, bypass_extensions=True)
        if (
            direction == "request"
            and field.trim_whitespace
            and not field.allow_blank
            and schema.get("type") == "string"
            and "pattern" not in schema
            and "format" not in schema
        ):
            schema["pattern"] = NOT_BLANK
        return schema


class FilterParameters(DjangoFilterExtension):
    """The list filters' query parameters with the limits their form fields enforce (longest
    text, smallest and largest number), so a value the filter refuses is outside the schema."""

    priority = 1
    match_subclasses = True

    def resolve_filter_field(
        self, auto_schema: Any, model: Any, filterset_class: Any, field_name: str, filter_field: Any
    ) -> Any:
        parameters = super().resolve_filter_field(
            auto_schema, model, filterset_class, field_name, filter_field
        )
        limits = {
            "maxLength": filter_field.extra.get("max_length"),
            "minimum": filter_field.extra.get("min_value"),
            "maximum": filter_field.extra.get("max_value"),
        }
        for parameter in parameters:
            # A filter left empty (?state=) filters nothing, as in the console's forms.
            parameter["allowEmptyValue"] = True
            schema = parameter["schema"]
            for key, value in limits.items():
                if value is not None and (key == "maxLength") == (schema.get("type") == "string"):
                    schema[key] = value
        return parameters


ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ErrorDetail": {
        "type": "object",
        "description": "Why the request was refused.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    "ValidationError": {
        "type": "object",
        "description": "The messages of each refused field under its name (a list of "
        "messages, or for a list of objects one object of messages per item), messages about "
        "the object as a whole under non_field_errors, or one message under detail when the "
        "body could not be read at all.",
        "properties": {
            "detail": {"type": "string"},
            "non_field_errors": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": {},
    },
}

_DETAIL = {"$ref": "#/components/schemas/ErrorDetail"}
_FIELDS = {"$ref": "#/components/schemas/ValidationError"}

ERROR_RESPONSES: dict[str, tuple[str, dict[str, Any]]] = {
    "400": ("Invalid input: the messages per field.", _FIELDS),
    "401": ("No valid credentials: send Authorization: Token <token>.", _DETAIL),
    "403": ("The role of the user does not allow this.", _DETAIL),
    "404": ("No such object (or no such page of the list).", _DETAIL),
    "409": (
        "This conflicts with the configuration: the object is in use, or the change "
        "would leave the organization without what it needs.",
        _FIELDS,
    ),
    "413": ("The request body is too large.", _DETAIL),
    "415": ("The body is not JSON.", _DETAIL),
    "429": ("Too many attempts; try again later.", _DETAIL),
}

#: Query parameters that never make an answer 400: an unknown ordering or search is ignored;
#: a page or format that does not exist is a 404.
_LENIENT_QUERY = {"ordering", "search", "page", "format"}
_WRITES = {"create", "update", "partial_update", "destroy"}


def _error_codes(method: str, view: Any, operation: dict[str, Any]) -> set[str]:
    parameters = operation.get("parameters", [])
    query = {p["name"] for p in parameters if p.get("in") == "query"}
    codes: set[str] = set()
    if view.get_authenticators():
        codes.add("401")
    if view.get_permissions():
        codes.add("403")
    if view.get_throttles():
        codes.add("429")
    if "requestBody" in operation:
        codes |= {"400", "413", "415"}
    if query - _LENIENT_QUERY:
        codes.add("400")
    if query & {"page", "format"} or any(p.get("in") == "path" for p in parameters):
        codes.add("404")
    action = getattr(view, "action", None)
    if action in _WRITES or (
        action is None
        and isinstance(view, GenericAPIView)
        and method in ("PUT", "PATCH", "DELETE", "POST")
    ):
        codes.add("409")
    return codes


#: A time of day as the API writes and reads it (no UTC offset, which JSON Schema's "time"
#: format requires).
TIME_OF_DAY = r"^([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"


def _as_python_reads_it(prop: dict[str, Any]) -> None:
    """Formats and patterns that JSON Schema reads differently from Python: a time of day
    without offset, and \\w (letters of every script in Python, ASCII in JSON Schema)."""
    for variant in [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]:
        if variant.get("format") == "time":
            del variant["format"]
            variant["pattern"] = TIME_OF_DAY
        if "\\w" in variant.get("pattern", ""):
            del variant["pattern"]
            if variant.get("minLength"):
                variant["pattern"] = NOT_BLANK


def add_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """A postprocessing hook: every operation lists the error answers it can give, with a
    shared ``ErrorDetail`` or ``ValidationError`` body."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in ERROR_SCHEMAS.items():
        schemas.setdefault(name, schema)
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and not parameter.get("required"):
                    # ?page=, ?format=, ?priority= are the same as leaving them out.
                    parameter["allowEmptyValue"] = True
    for component in schemas.values():
        for prop in component.get("properties", {}).values():
            _as_python_reads_it(prop)
    for path, _regex, method, callback in generator.endpoints or []:
        view = generator.create_view(callback, method)
        operation = result["paths"].get(generator.coerce_path(path, method, view), {})
        operation = operation.get(method.lower())
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for code in sorted(_error_codes(method, view, operation)):
            description, body = ERROR_RESPONSES[code]
            # A view's own annotation keeps its description but gets the shared body.
            response = responses.setdefault(code, {"description": description})
            response.setdefault("content", {"application/json": {"schema": body}})
    return result
