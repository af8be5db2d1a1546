"""The Scalable manifest: reading it, choosing a target, and its canonical hash."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

MANIFEST_ENV = "SCALABLE_MANIFEST"
DEFAULT_MANIFEST = "scalable.yaml"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the key."""


@dataclass
class Manifest:
    """The parts of a Scalable manifest a session needs."""

    data: dict
    path: Path | None = None
    text: str = ""

    @property
    def project(self) -> str:
        project = self.data.get("project") or {}
        return str(project.get("name") if isinstance(project, dict) else project or "project")

    @property
    def targets(self) -> dict:
        return self.data.get("targets") or {}

    def target(self, name: str) -> dict:
        try:
            return dict(self.targets[name])
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none"
            raise ManifestError(
                f"{self.path or 'manifest'}: no target {name!r} under 'targets' (known: {known})"
            ) from None

    def task_resources(self, task: str) -> dict:
        """The component resources requested for a task (cpus, memory), if the manifest says."""
        spec = (self.data.get("tasks") or {}).get(task) or {}
        component = (self.data.get("components") or {}).get(spec.get("component"), {})
        return dict(component, component=spec.get("component")) if component else {}

    @property
    def hash(self) -> str:
        """SHA-256 of the manifest's canonical JSON (sorted keys): formatting-independent."""
        canonical = orjson.dumps(self.data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        return "sha256:" + hashlib.sha256(canonical).hexdigest()

    def to_yaml(self) -> str:
        return self.text or yaml.safe_dump(self.data, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        return cls(data=data)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Manifest:
        """Read `path`, else $SCALABLE_MANIFEST, else ./scalable.yaml."""
        path = Path(path or os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: expected a mapping at the top level")
        for key in ("targets", "components", "tasks"):
            if key in data and not isinstance(data[key], (dict, type(None))):
                raise ManifestError(f"{path}: '{key}' must be a mapping")
        return cls(data=data, path=path, text=text)
