"""Problems with a job, as a user reads them: the field's dotted path and a reason in plain words.

``problems(exc, prefix)`` turns a pydantic ValidationError into ``Problem``s whose paths are the keys the user wrote
(``input.payload.steps``, ``input.payload.alwayson_scripts.controlnet.args[0].module``, ``spec.priority``).
Validators that check several fields together raise through ``Refusals`` so that each problem still carries the
path of the field it is about, and all of them are reported at once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable, get_args

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

_PYDANTIC_ERROR_TYPES = frozenset(get_args(ErrorType))

# The error type of our own refusals; the message is already written for a person.
REFUSED = "img2img_refused"

# What a `pattern` means, in words, for the patterns the models use (registered where they are defined).
PATTERN_MEANINGS: dict[str, str] = {}


class FieldError(ValueError):
    """A value of the job that cannot be used as asked; ``field`` is its key under ``input.payload`` (``steps``,
    ``alwayson_scripts.controlnet.args[0].module``). The runner reports it as bad input with that path."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class Refusals:
    """Collects problems found by one validator; ``raise_any`` raises them together, each at its own field.

    Locations are relative to the model being validated: ("guidance",) inside a ControlNet unit becomes
    ``…args[0].guidance`` in the final path.
    """

    def __init__(self, title: str):
        self.title = title
        self.items: list[InitErrorDetails] = []

    def add(self, loc: str | tuple[str | int, ...], reason: str, value: Any = None) -> None:
        loc = (loc,) if isinstance(loc, str) else loc
        self.items.append(InitErrorDetails(type=refuse(reason), loc=loc, input=_short(value)))

    def raise_any(self, also: ValidationError | None = None) -> None:
        """Raise what was collected, together with the errors of ``also`` (validation of the other fields)."""
        items = list(self.items)
        for err in also.errors(include_url=False) if also else ():
            kind = err["type"]
            if kind in _PYDANTIC_ERROR_TYPES:
                items.append(InitErrorDetails(type=kind, loc=err["loc"], input=err["input"],
                                              ctx=err.get("ctx") or {}))
            else:  # ours, or a custom type: keep its message as it is
                items.append(InitErrorDetails(type=PydanticCustomError(kind, "{reason}", {"reason": err["msg"]}),
                                              loc=err["loc"], input=err["input"]))
        if items:
            raise ValidationError.from_exception_data(self.title, items)


def unknown_key_reason(key: str, known: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    if near:
        return "is not a known field; did you mean " + " or ".join(repr(n) for n in near) + "?"
    return "is not a known field"


def refuse(reason: str) -> PydanticCustomError:
    """An error for a field validator to raise: the reason is shown as written."""
    # "{reason}" with the text as context: pydantic formats the message and keeps braces in the text intact
    return PydanticCustomError(REFUSED, "{reason}", {"reason": reason})


def format_path(loc: Iterable[str | int], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part:
            path = f"{path}.{part}" if path else str(part)
    return path


def problems(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """Every error of ``exc`` as a Problem, paths under ``prefix`` (e.g. "input" or "spec")."""
    found: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(part for part in err["loc"] if not _is_union_tag(part))
        found.append(Problem(format_path(loc, prefix), _reason(err)))
    # one problem per path and reason, in order (unions can repeat the same complaint)
    return list(dict.fromkeys(found))


def _is_union_tag(part: str | int) -> bool:
    # pydantic puts the union member's type into the location ("int", "str", "function-after[...]")
    return isinstance(part, str) and (part in {"int", "str", "float", "bool", "list", "dict", "none"}
                                      or "[" in part)


def _reason(err: dict[str, Any]) -> str:
    kind, ctx, msg = err["type"], err.get("ctx") or {}, err["msg"]
    value = err.get("input")
    if kind == REFUSED:
        return msg
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {_num(ctx.get('ge', ctx.get('gt')))}" if kind.endswith("equal") \
            else f"must be greater than {_num(ctx['gt'])}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {_num(ctx.get('le'))}" if kind.endswith("equal") \
            else f"must be less than {_num(ctx['lt'])}"
    if kind == "missing":
        return "is required"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number, not {_show(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, not {_show(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, not {_show(value)}"
    if kind in ("string_type",):
        return f"must be a string, not {_show(value)}"
    if kind in ("list_type",):
        return f"must be a list, not {_show(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be an object, not {_show(value)}"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else \
            f"is too short (at least {ctx.get('min_length')} characters)"
    if kind == "too_long":
        return f"has too many items (at most {ctx.get('max_length')})"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, not {_show(value)}"
    if kind == "enum":
        return f"must be one of {ctx.get('expected')}, not {_show(value)}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern")
        return f"{_show(value)} is not {PATTERN_MEANINGS[pattern]}" if pattern in PATTERN_MEANINGS \
            else f"{_show(value)} has the wrong form (must match {pattern})"
    if kind == "value_error":  # ValueError raised by a validator: pydantic prefixes "Value error, "
        return msg.removeprefix("Value error, ")
    return msg


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _short(value: Any) -> Any:
    # keep error inputs small: a refused 1 MB image must not be copied into every message
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value
