"""Typed config tree: pydantic v2 models, YAML loading and one dotted override syntax.

Every job and serve config is a tree of `ConfigModel`s (pydantic, `extra="forbid"`, strict
types). `load_config(Cls, path, ["train.lr=3e-4"])` reads YAML, applies overrides and
validates, raising `ConfigError` that names the dotted key, what was wrong and, for an
unknown key, the valid keys there. Jobs call it before any Ray resource is requested.
`json_schema(Cls)` is what editors check YAMLs against (`lmrec schema <job>`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

T = TypeVar("T", bound="ConfigModel")

# `register` (tracking sections) is a user-facing key; pydantic warns that it shadows ABCMeta.register,
# which only the class (not an instance) reaches, so the field reads as the config value.
warnings.filterwarnings("ignore", message='Field name "register" in "\\w+" shadows', category=UserWarning)


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range; `key` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"config key '{key}': {message}" if key else message)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


class ConfigModel(BaseModel):
    """Base of every config section: unknown keys and wrong types fail; `validate_config` adds range checks.

    Strict types: a YAML string is not an int, `1` is not `true`; an int is accepted where a
    float is expected (lossless). Direct construction (`TrainConfig(epochs=0)`) raises
    `ConfigError` too, so every path into a config reports the key.
    """

    # protected_namespaces: fields such as `model_uri` and `model_name` are user-facing keys.
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self), exc) from None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise ConfigError(unknown[0], f"unknown key; valid keys here are {sorted(cls.model_fields)}")
        return data

    @model_validator(mode="after")
    def _checks(self) -> ConfigModel:
        self.validate_config()
        return self

    def validate_config(self) -> None:
        """Checks across fields and ranges; raise through `check(cond, key, message)`."""


# ---------------------------------------------------------------- errors


def _members(tp: Any) -> tuple[Any, ...]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return tuple(a for a in get_args(tp) if a is not type(None))
    if origin is typing.Annotated:
        return _members(get_args(tp)[0])
    return (tp,)


def _child(tp: Any, part: str | int) -> tuple[Any, bool]:
    """(type of `part` inside `tp`, whether `part` is a real key) walking a pydantic error location."""
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            if isinstance(part, str) and part in member.model_fields:
                return member.model_fields[part].annotation, True
            continue
        origin = get_origin(member)
        if origin in (list, tuple, Sequence) and isinstance(part, int):
            args = get_args(member)
            return (args[0] if args else Any), True
        if origin in (dict, Mapping) and isinstance(part, str):
            args = get_args(member)
            return (args[1] if len(args) == 2 else Any), True
    return tp, False  # a union member's tag ("int", "literal['auto']"): not part of the key


def _key(cls: type, loc: tuple[str | int, ...]) -> str:
    key, tp = "", cls
    for part in loc:
        tp, real = _child(tp, part)
        if real:
            key = f"{key}[{part}]" if isinstance(part, int) else _join(key, str(part))
    return key


_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true/false",
    "bool_parsing": "expected true/false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def _message(err: Mapping[str, Any]) -> str:
    kind, got = err["type"], err.get("input")
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {got!r}"
    if kind == "literal_error":
        return f"expected one of [{err['ctx']['expected']}], got {got!r}"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = str(err["msg"])
    return f"{msg[:1].lower()}{msg[1:]}, got {got!r}"


def config_error(cls: type, exc: ValidationError, path: str = "") -> ConfigError:
    """The first error of a pydantic ValidationError as a ConfigError naming the dotted key."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    key = _join(path, _key(cls, tuple(err["loc"])))
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, ConfigError):
        return ConfigError(_join(key, inner.key), inner.message)
    if err["type"] == "extra_forbidden" and err["loc"]:
        parent, _ = cls, None
        for part in err["loc"][:-1]:
            parent, _ = _child(parent, part)
        valid = sorted({f for m in _members(parent) if isinstance(m, type) for f in getattr(m, "model_fields", {})})
        return ConfigError(key, f"unknown key; valid keys here are {valid}")
    return ConfigError(key, _message(err))


# ---------------------------------------------------------------- building and dumping


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build config `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping for section {cls.__name__}, got {data!r}")
    try:
        return cls.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise config_error(cls, exc, path) from None
    except ConfigError as exc:  # raised by a nested direct construction
        raise ConfigError(_join(path, exc.key), exc.message) from None


def to_dict(obj: Any) -> Any:
    """Config tree -> plain dict/list/scalars (YAML/JSON friendly)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="python")
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def evolve(obj: T, **changes: Any) -> T:
    """A validated copy of config `obj` with top-level fields replaced (values may be configs)."""
    return from_dict(type(obj), {**to_dict(obj), **{k: to_dict(v) for k, v in changes.items()}})


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`["train.lr=3e-4", "model.size=small"]` -> nested dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(key, "empty key in override")
        value = _parse_scalar(raw)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, "override sets both a value and a sub-key")
        node[parts[-1]] = value
    return out


def _parse_scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # YAML reads 3e-4 as a string (no dot); accept it as the float users mean.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            return value
    return value


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge; `over` wins. Mappings merge, everything else replaces."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("", f"{p}: top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """YAML file (optional) + dotted overrides -> validated config tree."""
    data = load_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def replace(obj: T, overrides: Sequence[str]) -> T:
    """Return a validated copy of config tree `obj` with dotted overrides applied."""
    data = deep_merge(to_dict(obj), parse_overrides(overrides))
    return from_dict(type(obj), data)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict/config -> {"train.lr": 3e-4, ...} (for MLflow params)."""
    data = to_dict(obj)
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            key = _join(prefix, k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = data
    return out


def config_hash(obj: Any) -> str:
    """Stable SHA-256 of a config (config tree or plain data)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _field_comments(cls: type) -> dict[str, str]:
    """Field docs from a class body: a field line's trailing `# comment`, else the comment lines above it."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    fields = getattr(cls, "model_fields", {})
    out: dict[str, str] = {}
    above: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        code, _, trailing = line.partition("  # ")
        m = re.match(r"\s+(\w+)\s*:", code)
        if m and m.group(1) in fields and (trailing or above):
            out[m.group(1)] = trailing.strip() or " ".join(above)
        above = []
    return out


def _models_in(tp: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            found.append(member)
        else:
            for arg in get_args(member):
                found.extend(_models_in(arg))
    return found


def json_schema(cls: type[ConfigModel]) -> dict[str, Any]:
    """JSON Schema of config `cls` (draft 2020-12) for editors checking YAML files.

    Field descriptions come from the trailing comments in the config classes, so the code
    comment stays the one place a key is documented."""
    schema = cls.model_json_schema()
    seen: set[type] = set()
    todo: list[type[BaseModel]] = [cls]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        node = schema if model is cls else schema.get("$defs", {}).get(model.__name__)
        if node is not None:
            for name, text in _field_comments(model).items():
                prop = node.get("properties", {}).get(name)
                if prop is not None and "description" not in prop:
                    prop["description"] = text
        for field in model.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def check(cond: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless `cond` (for `validate_config()` methods)."""
    if not cond:
        raise ConfigError(key, message)
