"""The Scalable manifest: reading and checking it, choosing a target, and its canonical hash.

The manifest is the Scalable tool's YAML (``scalable.yaml``), read as it is::

    version: 1
    project: {name: demeter-lulcc}
    targets:
      local: {provider: local, max_workers: 2, threads_per_worker: 1}
      hpc:   {provider: slurm, queue: short, account: my-acct, walltime: "01:00:00"}
    components:
      sim: {cpus: 4, memory: 16G}
    tasks:
      run_simulation: {component: sim}

**Checks** (`Manifest.load` and `Manifest.from_dict` both make them; the first one that
fails is a `ManifestError`, a `ValueError`, whose one-line message names the file, the key
path, what was expected and what was found, e.g.
``scalable.yaml: components.sim.memory: expected a size such as 16G, 512M or a number of
bytes, found '16 gigs'``):

- The top level is a mapping. YAML that does not parse is an error naming the line; so is
  a key given twice in one mapping (PyYAML would keep the last one silently). So are YAML
  nested too deeply to read, aliases that expand to more than `MAX_VALUES` values (a
  "billion laughs" YAML bomb), and an integer of more digits than Python reads.
- ``version``: optional; when given, the number 1.
- ``project``: optional; a string, or a mapping whose ``name`` is a string.
- ``targets``: optional; a mapping of names to mappings (an empty entry, ``local:``, is a
  target with default settings). ``provider`` defaults to the target's name and must be
  one of `PROVIDERS`. By provider:

  - ``local``: ``max_workers`` an integer >= 0, ``threads_per_worker`` an integer >= 1,
    ``memory`` a size or ``auto``.
  - ``slurm``: ``queue`` and ``account`` non-empty strings, ``walltime`` a string
    ``HH:MM:SS`` or ``D-HH:MM:SS`` (quote it: YAML reads an unquoted ``12:00:00`` as the
    number 43200), ``cores`` and ``processes`` integers >= 1, ``memory`` a size > 0,
    ``job_extra`` / ``job_extra_directives`` lists of strings.
  - ``address``: ``address`` a scheduler address (``tcp://host:8786``), unless the
    target's name is one.

  ``energy:`` (any provider): the constants of the energy estimate, checked by
  `energy_model.constants` (numbers: ``pue`` >= 1, the others >= 0; ``processor_tdp_w``
  with ``processor_cores``).

  Other keys of a target (``cost:``, checked by `analysis.cost`; options of a provider
  this package does not run yet) are left to whoever reads them.
- ``components``: optional; a mapping of names to mappings with ``cpus`` (a finite number > 0)
  and ``memory`` (a size > 0: ``16G``, ``512M``, ``16GiB``, ``16GB`` or a number of
  bytes), and optionally ``gpus`` (an integer >= 0). Other keys are kept as they are.
- ``tasks``: optional; a mapping of task names to mappings whose ``component`` is one of
  the names under ``components``.
- Any other top-level key is a `ManifestWarning` (not an error: a manifest of the Scalable
  tool may carry sections this package does not read). It stays in the snapshot and in
  the hash.

**Target choice** (`choose_target`, as the Scalable tool does it): the explicit target,
else ``$SCALABLE_TARGET``, else, inside a Slurm allocation (``$SLURM_JOB_ID`` set), the
manifest's first target whose provider is ``slurm``, else the target named ``slurm``;
else ``local``. A name is a target of the manifest, else a scheduler address, else a
provider name (a target with that provider's defaults).

**Hash** (`Manifest.hash`): SHA-256 of the data as canonical JSON (sorted keys), so it does
not depend on YAML formatting, comments or key order.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import orjson
import yaml

from . import energy_model
from .errors import shown

MANIFEST_ENV = "SCALABLE_MANIFEST"
DEFAULT_MANIFEST = "scalable.yaml"
TARGET_ENV = "SCALABLE_TARGET"
SLURM_JOB_ENV = "SLURM_JOB_ID"

#: The top-level keys this package reads; others are warned about and kept.
SECTIONS = ("version", "project", "targets", "components", "tasks")
#: Scheduler addresses a target may be (Dask's comm schemes).
ADDRESS_PREFIXES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")
#: Provider names a target may have: those the session runs (local, address), Slurm (being
#: built), and those `analysis.cost` knows rates for (with its aliases).
PROVIDERS = frozenset(
    {"local", "address", "slurm", "pbs", "sge", "lsf", "kubernetes", "k8s", "aws", "ec2"}
    | {"gcp", "google", "gce", "azure"}
)

_MISSING = object()
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(?:([kmgtp])(i?)(b?)|(b?))\s*$", re.IGNORECASE)
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SIZE_EXPECTED = "a size such as 16G, 512M or a number of bytes"
#: The most values a manifest may hold with its aliases expanded: a few aliases of aliases
#: (a "billion laughs" YAML bomb) would otherwise make gigabytes of JSON for its hash.
MAX_VALUES = 1_000_000
_DECIMAL = re.compile(r"^[-+]?[0-9_]+$")


class ManifestError(ValueError):
    """A manifest that cannot be used; the one-line message names the file and the key."""


class ManifestWarning(UserWarning):
    """Something in a manifest that is ignored (an unknown top-level key)."""


# --- checking --------------------------------------------------------------------------------
def _show(value) -> str:
    """What was found, short and on one line."""
    if value is _MISSING or value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        text = repr(value if len(value) <= 40 else value[:37] + "...")
        return text if value.strip() else f"an empty string {text}"
    if isinstance(value, Real):
        try:
            text = repr(value)
        except ValueError:  # an integer of more than 4,300 digits
            return "a number too long to show"
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def _key(path: str, name) -> str:
    name = str(name)
    part = name if _PLAIN_KEY.match(name) else json.dumps(name)
    return f"{path}.{part}" if path else part


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite number (YAML's .inf and .nan are not)."""
    if not isinstance(value, Real) or isinstance(value, bool):
        return False
    return _is_int(value) or math.isfinite(value)


def _names(names) -> str:
    """Names for a one-line message (one holding a newline or the like is quoted)."""
    return ", ".join(sorted(map(shown, names)))


def size_bytes(value) -> int | None:
    """Bytes of a manifest size (`16G`, `512Mi`, `16GB`, or a number of bytes), else None.

    `16G`, `16Gi` and `16GiB` are 16 x 2**30 (Slurm's and the Scalable tool's reading);
    `16GB` is 16 x 10**9 (Dask's). A negative number, or one beyond a double, is no size.
    The read path reads sizes with this function too (`analysis.facts.size_bytes`).

    >>> size_bytes("16G") == 16 * 2**30, size_bytes("512M") == 512 * 2**20
    (True, True)
    """
    if _is_int(value):
        try:
            float(value)
        except OverflowError:  # beyond a double, as `"9" * 400 + "G"` is: no size
            return None
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _SIZE.match(value)
    if not match:
        return None
    number, unit, binary, byte, _ = match.groups()
    base = 1000 if byte and not binary else 1024
    nbytes = float(number) * (base ** _POWERS[unit.lower()] if unit else 1)
    return int(nbytes) if math.isfinite(nbytes) else None  # 400 digits are no size


class _Checker:
    """Checks one manifest; `fail` raises the one-line `ManifestError`."""

    def __init__(self, data, source: str):
        self.data = data
        self.source = source

    def fail(self, path: str, expected: str, found=_MISSING):
        raise ManifestError(f"{self.source}: {path}: expected {expected}, found {_show(found)}")

    def mapping(self, path: str, value, what: str = "a mapping") -> dict:
        if not isinstance(value, Mapping):
            self.fail(path, what, value)
        return value

    def names(self, path: str, section: Mapping, what: str) -> None:
        for name in section:
            if not isinstance(name, str) or not name.strip():
                self.fail(path, f"{what} names that are non-empty strings", name)

    def integer(self, path: str, value, minimum: int) -> None:
        if not _is_int(value) or value < minimum:
            self.fail(path, f"an integer >= {minimum}", value)

    def text(self, path: str, value) -> None:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, "a non-empty string", value)

    def size(self, path: str, value, *, zero: bool = False, auto: bool = False) -> None:
        if auto and isinstance(value, str) and value.strip().lower() == "auto":
            return
        nbytes = size_bytes(value)
        if nbytes is None or nbytes < 0 or (nbytes == 0 and not zero):
            expected = _SIZE_EXPECTED + ("" if zero else " (> 0)") + (", or auto" * auto)
            self.fail(path, expected, value)

    # --- sections ------------------------------------------------------------------------
    def check(self) -> None:
        data = self.data
        if not isinstance(data, Mapping):
            found = "an empty file" if data is None else _show(data)
            raise ManifestError(
                f"{self.source}: expected a mapping at the top level, found {found}"
            )
        version = data.get("version", _MISSING)
        if version is not _MISSING and not (_is_number(version) and version == 1):
            self.fail("version", "1", version)
        if "project" in data:
            self.project(data["project"])
        targets = data.get("targets")
        if targets is not None:
            self.mapping("targets", targets, "a mapping of target names to settings")
            self.names("targets", targets, "target")
            for name, settings in targets.items():
                self.target(name, settings)
        components = data.get("components")
        if components is not None:
            self.mapping("components", components, "a mapping of component names to resources")
            self.names("components", components, "component")
            for name, spec in components.items():
                self.component(_key("components", name), spec)
        tasks = data.get("tasks")
        if tasks is not None:
            self.mapping("tasks", tasks, "a mapping of task names to their component")
            self.names("tasks", tasks, "task")
            for name, spec in tasks.items():
                self.task(_key("tasks", name), spec, components or {})
        self.warn_unknown(data)

    def project(self, project) -> None:
        if isinstance(project, Mapping):
            if not isinstance(project.get("name"), str):
                self.fail("project.name", "a string", project.get("name", _MISSING))
        elif not isinstance(project, str):
            self.fail("project", "a name, or a mapping with a name", project)

    def target(self, name: str, settings) -> None:
        path = _key("targets", name)
        if settings is None:
            settings = {}
        self.mapping(path, settings, "a mapping of the target's settings")
        provider = settings.get("provider", name)
        known = ", ".join(sorted(PROVIDERS))
        if not isinstance(provider, str) or provider.strip().lower() not in PROVIDERS:
            expected = f"one of {known}"
            if "provider" not in settings:
                expected += f" (the target's name {name!r} is not one)"
            self.fail(_key(path, "provider"), expected, settings.get("provider", _MISSING))
        provider = provider.strip().lower()
        if "energy" in settings:
            try:
                energy_model.constants(settings["energy"])
            except energy_model.EnergyError as exc:
                raise ManifestError(f"{self.source}: {path}: {exc}") from None
        if provider == "local":
            self.local(path, settings)
        elif provider == "slurm":
            self.slurm(path, settings)
        elif provider == "address" and not name.startswith(ADDRESS_PREFIXES):
            address = settings.get("address", _MISSING)
            if not isinstance(address, str) or not address.startswith(ADDRESS_PREFIXES):
                self.fail(
                    _key(path, "address"), "a scheduler address such as tcp://host:8786", address
                )

    def local(self, path: str, settings: Mapping) -> None:
        if "max_workers" in settings:
            self.integer(_key(path, "max_workers"), settings["max_workers"], 0)
        if "threads_per_worker" in settings:
            self.integer(_key(path, "threads_per_worker"), settings["threads_per_worker"], 1)
        if "memory" in settings:
            self.size(_key(path, "memory"), settings["memory"], zero=True, auto=True)

    def slurm(self, path: str, settings: Mapping) -> None:
        for key in ("queue", "account"):
            if key in settings:
                self.text(_key(path, key), settings[key])
        if "walltime" in settings:
            self.walltime(_key(path, "walltime"), settings["walltime"])
        for key in ("cores", "processes"):
            if key in settings:
                self.integer(_key(path, key), settings[key], 1)
        if "memory" in settings:
            self.size(_key(path, "memory"), settings["memory"])
        for key in ("job_extra", "job_extra_directives"):
            if key in settings:
                value = settings[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    self.fail(_key(path, key), "a list of strings", value)

    def walltime(self, path: str, value) -> None:
        expected = 'a string "HH:MM:SS" or "D-HH:MM:SS"'
        if not isinstance(value, str):
            if _is_int(value):  # YAML 1.1 reads 12:00:00 unquoted as 43200
                expected += " (quote it: YAML reads an unquoted 12:00:00 as a number)"
            self.fail(path, expected, value)
        match = _WALLTIME.match(value.strip())
        if not match or (match.group(1) is not None and int(match.group(2)) > 23):
            self.fail(path, expected, value)

    def component(self, path: str, spec) -> None:
        self.mapping(path, spec, "a mapping with cpus and memory")
        cpus = spec.get("cpus", _MISSING)
        if not _is_number(cpus) or cpus <= 0:
            self.fail(_key(path, "cpus"), "a number > 0", cpus)
        self.size(_key(path, "memory"), spec.get("memory", _MISSING))
        if "gpus" in spec:
            self.integer(_key(path, "gpus"), spec["gpus"], 0)

    def task(self, path: str, spec, components: Mapping) -> None:
        self.mapping(path, spec, "a mapping with a component")
        name = spec.get("component", _MISSING)
        if not isinstance(name, str) or name not in components:
            names = _names(components)
            where = (
                f"one of the names under components ({names})"
                if names
                else ("the name of a component (the manifest has no components)")
            )
            self.fail(_key(path, "component"), where, name)

    def warn_unknown(self, data: Mapping) -> None:
        for key in data:
            if key in SECTIONS:
                continue
            close = difflib.get_close_matches(str(key), SECTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            warnings.warn(
                f"{self.source}: unknown top-level key {str(key)!r} is ignored "
                f"(known: {', '.join(SECTIONS)}){hint}",
                ManifestWarning,
                stacklevel=5,
            )


def validate(data, source: str = "manifest") -> None:
    """Check a manifest's data; raise `ManifestError` (one line) at the first problem.

    Unknown top-level keys are a `ManifestWarning`, not an error.
    """
    _Checker(data, source).check()


# --- reading ---------------------------------------------------------------------------------
def _check_nodes(node, source: str, path: str = "", sizes=None, open_=None) -> int:
    """Refuse a key given twice in one mapping (PyYAML would keep the last one silently),
    an alias inside the node it names (data that has no JSON form, so no hash), aliases
    that expand to more than `MAX_VALUES` values (a YAML bomb) and an integer too long for
    Python to read. Returns the number of values in the node, aliases expanded."""
    sizes = {} if sizes is None else sizes
    open_ = set() if open_ is None else open_
    where = path or "(top level)"
    if id(node) in open_:
        raise ManifestError(f"{source}: {where}: expected data, found an alias to itself")
    if id(node) in sizes:  # an alias of a node already checked
        return sizes[id(node)]
    open_.add(id(node))
    size = 1
    if isinstance(node, yaml.MappingNode):
        lines = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`, overridable
                size += _check_nodes(value_node, source, path, sizes, open_)
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            here = _key(path, key) if key is not None else path
            line = key_node.start_mark.line + 1
            if key is not None and key in lines:
                at = f"line {line}" if lines[key] == line else f"lines {lines[key]} and {line}"
                raise ManifestError(
                    f"{source}: {here}: expected the key once, found it twice ({at})"
                )
            if key is not None:
                lines[key] = line
            size += 1 + _check_nodes(value_node, source, here, sizes, open_)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            size += _check_nodes(item, source, f"{path}[{i}]", sizes, open_)
    elif isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
        digits = sum(c.isdigit() for c in node.value)
        limit = sys.get_int_max_str_digits()
        if limit and digits > limit and _DECIMAL.match(node.value):
            raise ManifestError(
                f"{source}: {where}: expected a number of at most {limit} digits, "
                f"found one of {digits}"
            )
    if size > MAX_VALUES:
        raise ManifestError(
            f"{source}: {where}: expected at most {MAX_VALUES:,} values, found aliases that "
            f"expand to {size:,} (a YAML bomb?)"
        )
    open_.discard(id(node))
    sizes[id(node)] = size
    return size


def _parse(text: str, source: str):
    try:
        _check_nodes(yaml.compose(text, Loader=yaml.SafeLoader), source)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        problem = " ".join(str(problem).split())
        raise ManifestError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:  # PyYAML reads nested collections recursively
        raise ManifestError(f"{source}: not valid YAML: nested too deeply to read") from None


def _text_keys(value):
    """`value` with every mapping key as text (a key that is not a string as its JSON), so
    that keys of several types sort."""
    if isinstance(value, Mapping):
        return {
            k if isinstance(k, str) else json.dumps(k, default=str): _text_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_text_keys(v) for v in value]
    return value


# --- the manifest ----------------------------------------------------------------------------
@dataclass
class Manifest:
    """The parts of a Scalable manifest a session needs (checked: see the module's doc)."""

    data: dict
    path: Path | None = None
    text: str = ""

    @property
    def source(self) -> str:
        """How error messages name the manifest: its path, else `manifest`."""
        return str(self.path) if self.path is not None else "manifest"

    @property
    def project(self) -> str:
        project = self.data.get("project") or {}
        return str(project.get("name") if isinstance(project, dict) else project or "project")

    @property
    def targets(self) -> dict:
        return self.data.get("targets") or {}

    def target(self, name: str) -> dict:
        try:
            return dict(self.targets[name] or {})
        except KeyError:
            known = _names(self.targets) or "none"
            raise ManifestError(
                f"{self.source}: no target {name!r} under 'targets' (known: {known})"
            ) from None

    def task_resources(self, task: str) -> dict:
        """The component resources requested for a task (cpus, memory), if the manifest says."""
        spec = (self.data.get("tasks") or {}).get(task) or {}
        component = (self.data.get("components") or {}).get(spec.get("component"), {})
        return dict(component, component=spec.get("component")) if component else {}

    def component_request(self, component: str) -> dict:
        """`{"component": name, "resources": {cpus, memory[, gpus]}}`; resources only when
        the manifest defines the component."""
        spec = (self.data.get("components") or {}).get(component)
        request = {"component": component}
        if isinstance(spec, Mapping):
            request["resources"] = {k: spec[k] for k in ("cpus", "memory", "gpus") if k in spec}
        return request

    def task_requests(self) -> dict[str, dict]:
        """`{task: {"component": name, "resources": {cpus, memory[, gpus]}}}` for every task
        the manifest names (plan.json's graph entries carry these)."""
        requests = {}
        for task in self.data.get("tasks") or {}:
            component = self.task_resources(task).get("component")
            if component:
                requests[task] = self.component_request(component)
        return requests

    @property
    def hash(self) -> str:
        """SHA-256 of the manifest's canonical JSON (sorted keys): formatting-independent."""
        try:
            canonical = orjson.dumps(
                self.data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
            )
        except TypeError:  # no JSON form for orjson (an integer over 64 bits, bytes, a surrogate)
            canonical = json.dumps(
                _text_keys(self.data),
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                default=str,
            ).encode("utf-8", "surrogatepass")
        return "sha256:" + hashlib.sha256(canonical).hexdigest()

    def to_yaml(self) -> str:
        return self.text or yaml.safe_dump(self.data, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """A manifest from its data, checked (`ManifestError` names it `manifest`)."""
        validate(data, "manifest")
        return cls(data=data)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Manifest:
        """Read and check `path`, else $SCALABLE_MANIFEST, else ./scalable.yaml."""
        path = Path(path or os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: expected UTF-8 text, found {exc.reason}") from None
        except ValueError as exc:  # a path holding a NUL byte
            raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
        data = _parse(text, str(path))
        validate(data, str(path))
        return cls(data=data, path=path, text=text)


# --- choosing a target -----------------------------------------------------------------------
def _provider_of(name: str, settings) -> str:
    provider = (settings or {}).get("provider", name) if isinstance(settings, Mapping) else name
    return str(provider).strip().lower()


def choose_target(
    manifest: Manifest | None, explicit: str | None = None, env: Mapping | None = None
) -> tuple[str, dict, str]:
    """`(name, settings, provider)` of the target a session runs on.

    The explicit name, else $SCALABLE_TARGET, else inside a Slurm allocation
    ($SLURM_JOB_ID set) the manifest's first target whose provider is slurm, else the
    target named `slurm`; else `local`. A name is a target of the manifest (its settings,
    its provider, defaulting to its name), else a scheduler address (provider `address`),
    else a provider name (no settings). Anything else is a `ManifestError`.

    >>> choose_target(None, None, {})
    ('local', {}, 'local')
    >>> choose_target(None, None, {"SLURM_JOB_ID": "42"})
    ('slurm', {}, 'slurm')
    """
    env = os.environ if env is None else env
    targets = manifest.targets if manifest is not None else {}
    from_env = str(env.get(TARGET_ENV) or "").strip()
    if explicit:
        name, why = str(explicit).strip(), "the target argument"
    elif from_env:
        name, why = from_env, f"${TARGET_ENV}"
    elif env.get(SLURM_JOB_ENV):
        slurm = (n for n, s in targets.items() if _provider_of(n, s) == "slurm")
        name, why = next(slurm, "slurm"), f"${SLURM_JOB_ENV} (inside a Slurm allocation)"
    else:
        name, why = "local", "the default"
    if name in targets:
        settings = dict(targets[name] or {})
        return name, settings, _provider_of(name, settings)
    if name.startswith(ADDRESS_PREFIXES):
        return name, {}, "address"
    if name.lower() in PROVIDERS - {"address"}:
        return name, {}, name.lower()
    known = _names(targets)
    expected = "a provider name such as local or slurm, or a scheduler address (tcp://host:8786)"
    if known:
        expected = f"one of the manifest's targets ({known}), " + expected
    where = f"{manifest.source}: targets" if manifest is not None else "target"
    raise ManifestError(f"{where}: expected {expected}, found {name!r} (from {why})")
