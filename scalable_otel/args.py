"""A bounded, redacted summary of a task's arguments for spans and tasks.jsonl."""

from __future__ import annotations

import functools
import inspect
import os
import re
import reprlib
from collections.abc import Iterable
from urllib.parse import unquote

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
    r"(AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|-----BEGIN [A-Z ]*PRIVATE KEY"  # PEM and OpenSSH private keys
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"  # GitHub tokens
    r"|xox[baprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."  # a JSON Web Token
)
# Secrets told by their context; searched only in texts with a ':', '=' or 'earer '
# (each branch needs one), as a search without a literal prefix costs ten times more.
_SECRET_IN_CONTEXT = re.compile(
    r"://[^/\s:@]+:[^/\s@]+@"  # credentials in a URL (scheme://user:pass@host)
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}"  # an Authorization header's value
    # a mapping or keyword text holding a secret by name: {'password': ...}, token=...
    r"""|(?i:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|"""
    r"""credentials?)['"]?\s*[:=]"""
)
# searched for secrets: the kept text and what follows it, so that a secret cut at the
# end of the kept text is recognized whole
_SEARCHED_CHARS = 4 * MAX_VALUE_CHARS
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, _SEARCHED_CHARS, _SEARCHED_CHARS
# what `Redaction.scrub` cuts out of a free text (an error message, a traceback): each
# secret itself, keeping what tells the reader where it was
_SCRUBBED = (
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        REDACTED,
    ),
    (
        re.compile(
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,}"
            r"|xox[baprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
            r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
        ),
        REDACTED,
    ),
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), rf"\g<1>{REDACTED}@"),
    (re.compile(r"((?i:bearer)\s+)[A-Za-z0-9._~+/-]{16,}=*"), rf"\g<1>{REDACTED}"),
    (
        re.compile(
            r"""((?i:password|passwd|secret|token|api[_-]?key|access[_-]?key|"""
            r"""private[_-]?key|credentials?)['"]?\s*[:=]\s*['"]?)[^\s'",;}&)\]]+"""
        ),
        rf"\g<1>{REDACTED}",
    ),
)
NAMES_ENV = "SCALABLE_REDACT_NAMES"
RECORD_ARGS_ENV = "SCALABLE_RECORD_ARGS"


def _name_words(name: str) -> tuple[str, list[str]]:
    lowered = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().replace("-", "_")
    return lowered, re.split(r"[^a-z0-9]+|_", lowered)


class Redaction:
    r"""What an argument summary hides: `[redacted]` instead of the value.

    Built in: parameter names whose words are secret words (password, token, secret,
    credentials...) or that contain api_key, access_key...; values whose text looks like
    a secret (cloud and code-host keys, private keys, JSON Web Tokens, credentials in a
    URL, a bearer token, a `password=`/`'token':` item inside a mapping or text).

    `names` adds names, matched as whole words (`"patient_id"` redacts `patient_id`,
    `PatientId` and `patient_id_hash`, not `patient_age` nor `scenario_id`), `values`
    adds regular expressions searched in each value's text (and cut out of error
    messages and tracebacks), and `record_args=False` records no arguments at all.
    A session fills what is left at None from the environment: `names` from
    $SCALABLE_REDACT_NAMES (words, comma-separated), `record_args` from
    $SCALABLE_RECORD_ARGS (`off` records none; else on).

    Example::

        from scalable_otel import Redaction, ScalableSession

        redaction = Redaction(names=["patient_id"], values=[r"\d{3}-\d{2}-\d{4}"])
        with ScalableSession(target="local", redaction=redaction) as session:
            ...
    """

    def __init__(
        self,
        names: Iterable[str] | None = None,
        values: Iterable[str | re.Pattern] = (),
        record_args: bool | None = None,
    ):
        if isinstance(names, (str, bytes)) or isinstance(values, (str, bytes, re.Pattern)):
            which = "names" if isinstance(names, (str, bytes)) else "values"
            raise TypeError(f"Redaction({which}=...) takes a list, not a single {which[:-1]}")
        if record_args is not None and not isinstance(record_args, bool):
            raise TypeError(
                f"Redaction(record_args=...) must be True, False or None, "
                f"not {type(record_args).__name__}"
            )
        names = None if names is None else tuple(names)
        # what was given, so that the environment fills only the rest (`with_env`)
        self._given = (names, record_args)
        self.names = tuple(
            words
            for words in (tuple(w for w in _name_words(str(n))[1] if w) for n in names or ())
            if words
        )
        self.values = tuple(_compiled(v) for v in values)
        self.record_args = True if record_args is None else record_args
        self.is_secret_name = functools.lru_cache(maxsize=4096)(self._is_secret_name)

    def __repr__(self) -> str:
        names, record_args = self._given
        values = [p.pattern for p in self.values]
        return f"Redaction(names={names!r}, values={values!r}, record_args={record_args!r})"

    @classmethod
    def from_env(
        cls,
        names: Iterable[str] | None = None,
        values: Iterable[str | re.Pattern] | None = None,
        record_args: bool | None = None,
        environ=None,
    ) -> Redaction:
        """Arguments first, then $SCALABLE_REDACT_NAMES and $SCALABLE_RECORD_ARGS."""
        environ = os.environ if environ is None else environ
        if names is None:
            names = [n.strip() for n in environ.get(NAMES_ENV, "").split(",") if n.strip()]
        if record_args is None:
            setting = environ.get(RECORD_ARGS_ENV, "").strip().lower()
            record_args = setting not in ("0", "off", "false", "no")
        return cls(names, values or (), record_args)

    def with_env(self, environ=None) -> Redaction:
        """This redaction with what it leaves at None taken from the environment."""
        names, record_args = self._given
        return Redaction.from_env(names, self.values, record_args, environ)

    def _is_secret_name(self, name: str) -> bool:
        lowered, words = _name_words(name)
        if _SECRET_WORDS.intersection(words) or any(p in lowered for p in _SECRET_PAIRS):
            return True
        return any(_contains_run(words, added) for added in self.names)

    def is_secret_text(self, text: str) -> bool:
        """True when `text` looks like, or holds, a secret."""
        if _SECRET_VALUE.search(text):
            return True
        if (":" in text or "=" in text or "earer " in text) and _SECRET_IN_CONTEXT.search(text):
            return True
        return any(pattern.search(text) for pattern in self.values)

    def value_patterns(self) -> list[tuple[str, int]]:
        """The added value patterns as plain data, for `Redaction(values=...)` elsewhere."""
        return [(p.pattern, p.flags) for p in self.values]

    def scrub(self, text: str | None) -> str | None:
        """`text` with each secret it holds replaced by `[redacted]` (for error messages and
        tracebacks, which are kept but must not carry a password to the run directory)."""
        if not text:
            return text
        for pattern, replacement in _SCRUBBED:
            text = pattern.sub(replacement, text)
        for pattern in self.values:
            text = pattern.sub(REDACTED, text)
        return text

    def value(self, name: str, value):
        """The summary of one argument: kept, shortened, or `[redacted]`."""
        if self.is_secret_name(name):
            return REDACTED
        if value is None or isinstance(value, (bool, int, float)):
            return value
        # bounded: a million-element list is not written out to keep 80 characters of it
        text = value[:_SEARCHED_CHARS] if isinstance(value, str) else _REPR.repr(value)
        if self.is_secret_text(text[:_SEARCHED_CHARS]):
            return REDACTED
        if len(text) > MAX_VALUE_CHARS:
            text = text[: MAX_VALUE_CHARS - 1] + "…"
        return text


def _compiled(value) -> re.Pattern:
    """A pattern from a string, a compiled pattern or a (pattern, flags) pair."""
    if isinstance(value, re.Pattern):
        return value
    if isinstance(value, (tuple, list)):
        return re.compile(value[0], value[1])
    return re.compile(value)


def _contains_run(words: list[str], run: tuple[str, ...]) -> bool:
    """True when `run` appears in `words` as consecutive items."""
    n = len(run)
    return any(tuple(words[i : i + n]) == run for i in range(len(words) - n + 1))


DEFAULT_REDACTION = Redaction()

_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<netloc>[^/?#]*)(?P<rest>.*)", re.DOTALL
)
_QUERY_ITEM = re.compile(r"([^&;=#]+)=([^&;#]*)")


def redact_url(url: str) -> str:
    """`url` as it may be shown or stored: without the user and password of its userinfo
    (`http://user:pass@host` -> `http://host`), with the values of secret-named query
    parameters `[redacted]`. Every URL a message names or run.json keeps goes through it.

    >>> redact_url("http://ann:hunter2@otel:4318/v1/traces?api_key=abc&env=prod")
    'http://otel:4318/v1/traces?api_key=[redacted]&env=prod'
    """
    match = _URL.match(url)
    netloc = match["netloc"].rpartition("@")[2]
    path, sep, query = match["rest"].partition("?")
    if sep:
        query = _QUERY_ITEM.sub(
            lambda item: (
                f"{item[1]}={REDACTED}"
                if DEFAULT_REDACTION.is_secret_name(unquote(item[1]))
                else item[0]
            ),
            query,
        )
    return f"{match['scheme'] or ''}{netloc}{path}{sep}{query}"


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


def summarize_args(fn, args: tuple, kwargs: dict, redaction: Redaction = DEFAULT_REDACTION) -> dict:
    """Map parameter names to short, JSON-safe values; secrets by name or look are redacted.

    >>> summarize_args(lambda scenario_id, password: 0, (47, "hunter2"), {})
    {'scenario_id': 47, 'password': '[redacted]'}
    """
    try:
        items = _named_items(fn, args, kwargs)
    except (TypeError, ValueError):
        items = [(f"arg{i}", v) for i, v in enumerate(args)] + list(kwargs.items())
    summary = {str(name): redaction.value(str(name), value) for name, value in items[:MAX_ARGS]}
    if len(items) > MAX_ARGS:
        summary["…"] = f"{len(items) - MAX_ARGS} more"
    return summary


def args_json(
    fn, args: tuple, kwargs: dict, redaction: Redaction = DEFAULT_REDACTION
) -> str | None:
    """`summarize_args` as a JSON string (span attributes hold no mappings); None when the
    call has no arguments or `redaction` records none."""
    if (not args and not kwargs) or not redaction.record_args:
        return None
    return orjson.dumps(summarize_args(fn, args, kwargs, redaction)).decode()
