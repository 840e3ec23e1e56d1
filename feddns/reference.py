"""The configuration reference, rendered from the pydantic models themselves.

Why it exists: documentation written by hand drifts from the code; this renders
every key of :class:`feddns.config.Settings` (its path, type, default and the
field's own docstring) as Markdown, and a test compares ``docs/configuration.md``
with it. Regenerate with ``python -m feddns.reference > docs/configuration.md``.
"""

from __future__ import annotations

import enum
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from feddns.config import Settings

HEADER = """# Configuration reference

Generated from the configuration models (`feddns/config.py`) by
`python -m feddns.reference`; a test fails when this file and the models differ.
Every key is optional unless its default says *required*. Unknown keys are errors.
`feddns check-config FILE` validates a file and prints each problem with its key path.
"""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation refers to (through unions, lists, dicts)."""
    out: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        out.extend(_models_in(arg))
    return out


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        if issubclass(annotation, enum.Enum):
            return " \\| ".join(f"`{m.value}`" for m in annotation)
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                "Path": "path"}.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "*required*"
    factory = field.default_factory
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list | tuple) and value and isinstance(value[0], BaseModel):
        return f"{len(value)} entry, see below" if len(value) == 1 else \
            f"{len(value)} entries, see below"
    if isinstance(value, list | tuple | dict):
        return f"`{json.dumps(value)}`"
    if isinstance(value, Path):
        return f"`{value}`"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple) and not value:
        return "`[]`"
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str, seen: set[type[BaseModel]]) -> list[str]:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        text = field.description or ""
        if not text:
            subs = _models_in(field.annotation)
            text = (subs[0].__doc__ or "") if subs else ""
        doc = " ".join(text.split()).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type_name(field.annotation)} | {_default(field)} | {doc} |")
        for sub in _models_in(field.annotation):
            if sub not in seen:
                is_list = typing.get_origin(field.annotation) is list or any(
                    typing.get_origin(a) is list for a in typing.get_args(field.annotation))
                nested.append((f"{path}[]." if is_list else f"{path}.", sub))
    for sub_prefix, sub in nested:
        seen.add(sub)
        doc = " ".join((sub.__doc__ or "").split())
        rows.append(f"| **`{sub_prefix.rstrip('.')}`** | | | {doc} |")
        rows.extend(_rows(sub, sub_prefix, seen))
    return rows


def render() -> str:
    """The whole reference as Markdown."""
    lines = [HEADER, "| key | type | default | meaning |", "|---|---|---|---|"]
    lines.extend(_rows(Settings, "", set()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
