"""A bounded, redacted summary of a task's arguments for spans and tasks.jsonl."""

from __future__ import annotations

import functools
import inspect
import re

import orjson

MAX_ARGS = 16
MAX_VALUE_CHARS = 80
REDACTED = "[redacted]"
# A name is secret when one of its words is (api_key, db_password, AWS_SECRET), not when a
# word merely contains one (n_passes, tokens).
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "credential",
        "credentials",
        "auth",
        "bearer",
    }
)
_SECRET_PAIRS = ("api_key", "private_key", "access_key", "secret_key", "session_key")
_SECRET_VALUE = re.compile(
    r"(AKIA|ASIA)[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|"
    r"gh[pousr]_[A-Za-z0-9]{30,}|xox[baprs]-[A-Za-z0-9-]{10,}"
)


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    lowered = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().replace("-", "_")
    words = re.split(r"[^a-z0-9]+|_", lowered)
    return bool(_SECRET_WORDS.intersection(words)) or any(p in lowered for p in _SECRET_PAIRS)


def _value(name: str, value):
    if _is_secret_name(name):
        return REDACTED
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else repr(value)
    if _SECRET_VALUE.search(text):
        return REDACTED
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return text


_PLAIN_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@functools.lru_cache(maxsize=512)
def _parameters(fn) -> tuple[inspect.Signature, tuple[str, ...] | None]:
    """The signature, and its names when every parameter is plain positional-or-keyword."""
    signature = inspect.signature(fn)
    params = signature.parameters.values()
    plain = tuple(p.name for p in params) if all(p.kind in _PLAIN_KINDS for p in params) else None
    return signature, plain


def _named_items(fn, args: tuple, kwargs: dict) -> list:
    try:
        signature, plain = _parameters(fn)
    except TypeError:  # an unhashable callable: no cache
        signature, plain = inspect.signature(fn), None
    if plain is not None and len(args) <= len(plain):
        return list(zip(plain, args)) + list(kwargs.items())  # the common case, fast
    bound = signature.bind_partial(*args, **kwargs)
    items = []
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            items.extend((f"{name}[{i}]", v) for i, v in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            items.extend(value.items())
        else:
            items.append((name, value))
    return items


def summarize_args(fn, args: tuple, kwargs: dict) -> dict:
    """Map parameter names to short, JSON-safe values; secrets by name or look are redacted.

    >>> summarize_args(lambda scenario_id, password: 0, (47, "hunter2"), {})
    {'scenario_id': 47, 'password': '[redacted]'}
    """
    try:
        items = _named_items(fn, args, kwargs)
    except (TypeError, ValueError):
        items = [(f"arg{i}", v) for i, v in enumerate(args)] + list(kwargs.items())
    summary = {str(name): _value(str(name), value) for name, value in items[:MAX_ARGS]}
    if len(items) > MAX_ARGS:
        summary["…"] = f"{len(items) - MAX_ARGS} more"
    return summary


def args_json(fn, args: tuple, kwargs: dict) -> str | None:
    """`summarize_args` as a JSON string (span attributes hold no mappings)."""
    if not args and not kwargs:
        return None
    return orjson.dumps(summarize_args(fn, args, kwargs)).decode()
