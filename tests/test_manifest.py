"""The Scalable manifest: its checks (one-line errors), target choice, hash, and a real run."""

import os
import warnings

import orjson
import pytest

from scalable_otel import ScalableSession
from scalable_otel.manifest import (
    Manifest,
    ManifestError,
    ManifestWarning,
    choose_target,
    size_bytes,
)
from tests import workloads

DESIGN_MANIFEST = """\
version: 1
project: {name: demeter-lulcc}
targets:
  local: {provider: local, max_workers: 2, threads_per_worker: 1}
  hpc:   {provider: slurm, queue: short, account: my-acct, walltime: "01:00:00"}
components:
  sim: {cpus: 4, memory: 16G}
tasks:
  run_simulation: {component: sim}
"""
PROVIDERS = (
    "address, aws, azure, ec2, gce, gcp, google, k8s, kubernetes, local, lsf, pbs, sge, slurm"
)
SIZE = "a size such as 16G, 512M or a number of bytes"
WALLTIME = 'a string "HH:MM:SS" or "D-HH:MM:SS"'


def load(project_dir, text: str) -> Manifest:
    (project_dir / "scalable.yaml").write_text(text)
    return Manifest.load("scalable.yaml")


def with_section(section: str, body: str) -> str:
    """A valid manifest whose `section` is `body` (at the top of the file)."""
    kept = {
        "targets": "targets:\n  local: {provider: local}\n",
        "components": "components:\n  sim: {cpus: 4, memory: 16G}\n",
        "tasks": "tasks:\n  run_simulation: {component: sim}\n",
    }
    del kept[section]  # first, so that the rule's line numbers are the file's
    return body + "version: 1\nproject: {name: p}\n" + "".join(kept.values())


# --- the checks: one rule each, the exact one-line message ----------------------------------
RULES = [
    # (what the rule is, manifest text, message after "scalable.yaml: ")
    ("top level mapping", "- a\n- b\n", "expected a mapping at the top level, found a list"),
    ("empty file", "", "expected a mapping at the top level, found an empty file"),
    (
        "valid YAML",
        "version: 1\ntargets: local: x\n",
        "not valid YAML at line 2, column 15: mapping values are not allowed here",
    ),
    (
        "each key once",
        "components:\n  sim: {cpus: 4, memory: 16G}\n  sim: {cpus: 2, memory: 8G}\n",
        "components.sim: expected the key once, found it twice (lines 2 and 3)",
    ),
    (
        "recursive alias",
        "targets: &t {local: *t}\n",
        "targets.local: expected data, found an alias to itself",
    ),
    ("version is 1", "version: 2\n", "version: expected 1, found 2"),
    ("version is a number", "version: '1'\n", "version: expected 1, found '1'"),
    (
        "project type",
        "project: [a]\n",
        "project: expected a name, or a mapping with a name, found a list",
    ),
    ("project name", "project: {title: x}\n", "project.name: expected a string, found nothing"),
    (
        "targets mapping",
        "targets: [local]\n",
        "targets: expected a mapping of target names to settings, found a list",
    ),
    (
        "target names",
        "targets:\n  1: {provider: local}\n",
        "targets: expected target names that are non-empty strings, found 1",
    ),
    (
        "target settings",
        "targets:\n  local: fast\n",
        "targets.local: expected a mapping of the target's settings, found 'fast'",
    ),
    (
        "known provider",
        "targets:\n  hpc: {provider: slrum}\n",
        f"targets.hpc.provider: expected one of {PROVIDERS}, found 'slrum'",
    ),
    (
        "provider defaults to the name",
        "targets:\n  hpc: {queue: short}\n",
        f"targets.hpc.provider: expected one of {PROVIDERS} (the target's name 'hpc' is not "
        "one), found nothing",
    ),
    (
        "local max_workers",
        "targets:\n  local: {max_workers: -1}\n",
        "targets.local.max_workers: expected an integer >= 0, found -1",
    ),
    (
        "local threads_per_worker",
        "targets:\n  local: {threads_per_worker: 1.5}\n",
        "targets.local.threads_per_worker: expected an integer >= 1, found 1.5",
    ),
    (
        "local memory",
        "targets:\n  local: {memory: lots}\n",
        f"targets.local.memory: expected {SIZE}, or auto, found 'lots'",
    ),
    (
        "slurm queue",
        "targets:\n  hpc: {provider: slurm, queue: ''}\n",
        "targets.hpc.queue: expected a non-empty string, found an empty string ''",
    ),
    (
        "slurm account",
        "targets:\n  hpc: {provider: slurm, account: 42}\n",
        "targets.hpc.account: expected a non-empty string, found 42",
    ),
    (
        "slurm walltime form",
        "targets:\n  hpc: {provider: slurm, walltime: '90 minutes'}\n",
        f"targets.hpc.walltime: expected {WALLTIME}, found '90 minutes'",
    ),
    (
        "slurm walltime hours of a day",
        "targets:\n  hpc: {provider: slurm, walltime: '1-24:00:00'}\n",
        f"targets.hpc.walltime: expected {WALLTIME}, found '1-24:00:00'",
    ),
    (
        "slurm walltime quoted",
        "targets:\n  hpc: {provider: slurm, walltime: 12:00:00}\n",
        f"targets.hpc.walltime: expected {WALLTIME} (quote it: YAML reads an unquoted "
        "12:00:00 as a number), found 43200",
    ),
    (
        "slurm cores",
        "targets:\n  hpc: {provider: slurm, cores: 0}\n",
        "targets.hpc.cores: expected an integer >= 1, found 0",
    ),
    (
        "slurm processes",
        "targets:\n  hpc: {provider: slurm, processes: '4'}\n",
        "targets.hpc.processes: expected an integer >= 1, found '4'",
    ),
    (
        "slurm memory",
        "targets:\n  hpc: {provider: slurm, memory: 0G}\n",
        f"targets.hpc.memory: expected {SIZE} (> 0), found '0G'",
    ),
    (
        "slurm job_extra",
        "targets:\n  hpc: {provider: slurm, job_extra: --exclusive}\n",
        "targets.hpc.job_extra: expected a list of strings, found '--exclusive'",
    ),
    (
        "address target",
        "targets:\n  shared: {provider: address, address: head:8786}\n",
        "targets.shared.address: expected a scheduler address such as tcp://host:8786, "
        "found 'head:8786'",
    ),
    (
        "components mapping",
        "components: [sim]\n",
        "components: expected a mapping of component names to resources, found a list",
    ),
    (
        "component mapping",
        "components:\n  my.sim:\n",
        'components."my.sim": expected a mapping with cpus and memory, found nothing',
    ),
    (
        "component cpus",
        "components:\n  sim: {memory: 16G}\n",
        "components.sim.cpus: expected a number > 0, found nothing",
    ),
    (
        "component cpus > 0",
        "components:\n  sim: {cpus: 0, memory: 16G}\n",
        "components.sim.cpus: expected a number > 0, found 0",
    ),
    (
        "component cpus not a boolean",
        "components:\n  sim: {cpus: yes, memory: 16G}\n",
        "components.sim.cpus: expected a number > 0, found true",
    ),
    (
        "component memory",
        "components:\n  sim: {cpus: 4, memory: 16 gigs}\n",
        f"components.sim.memory: expected {SIZE} (> 0), found '16 gigs'",
    ),
    (
        "component memory given",
        "components:\n  sim: {cpus: 4}\n",
        f"components.sim.memory: expected {SIZE} (> 0), found nothing",
    ),
    (
        "component gpus",
        "components:\n  sim: {cpus: 4, memory: 16G, gpus: -1}\n",
        "components.sim.gpus: expected an integer >= 0, found -1",
    ),
    (
        "tasks mapping",
        "tasks: [run_simulation]\n",
        "tasks: expected a mapping of task names to their component, found a list",
    ),
    (
        "task mapping",
        "tasks:\n  run_simulation: sim\n",
        "tasks.run_simulation: expected a mapping with a component, found 'sim'",
    ),
    (
        "task component exists",
        "tasks:\n  run_simulation: {component: simm}\n",
        "tasks.run_simulation.component: expected one of the names under components (sim), "
        "found 'simm'",
    ),
    (
        "task component given",
        "tasks:\n  run_simulation: {cpus: 4}\n",
        "tasks.run_simulation.component: expected one of the names under components (sim), "
        "found nothing",
    ),
]


def _manifest_text(text: str) -> str:
    """A rule's text: a whole manifest, or a section put into an otherwise valid one."""
    for section in ("targets", "components", "tasks"):
        if text.startswith(f"{section}:") and "&" not in text:
            return with_section(section, text)
    return text


@pytest.mark.parametrize("text, message", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_is_a_one_line_error_naming_file_key_expected_and_found(
    project_dir, text, message
):
    with pytest.raises(ManifestError) as error:
        load(project_dir, _manifest_text(text))
    assert str(error.value) == f"scalable.yaml: {message}"
    assert "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)


def test_a_task_needs_components_to_name(project_dir):
    text = "version: 1\ntasks:\n  run_simulation: {component: sim}\n"
    with pytest.raises(ManifestError) as error:
        load(project_dir, text)
    assert str(error.value) == (
        "scalable.yaml: tasks.run_simulation.component: expected the name of a component "
        "(the manifest has no components), found 'sim'"
    )


def test_from_dict_makes_the_same_checks(project_dir):
    with pytest.raises(ManifestError) as error:
        Manifest.from_dict({"components": {"sim": {"cpus": 4, "memory": "16 gigs"}}})
    assert (
        str(error.value)
        == f"manifest: components.sim.memory: expected {SIZE} (> 0), found '16 gigs'"
    )
    with pytest.raises(ManifestError, match=r"^manifest: expected a mapping at the top level"):
        Manifest.from_dict(["not", "a", "mapping"])
    # a session given a bad dict fails at once, with the same message
    with pytest.raises(ManifestError, match=r"^manifest: version: expected 1, found 3$"):
        ScalableSession(target="local", manifest={"version": 3})


def test_valid_manifests_load(project_dir):
    manifest = load(project_dir, DESIGN_MANIFEST)
    assert manifest.project == "demeter-lulcc"
    assert manifest.task_resources("run_simulation") == {
        "cpus": 4,
        "memory": "16G",
        "component": "sim",
    }
    # every optional form: bare project name, empty target, address targets, slurm options,
    # sizes in each unit, gpus, components no task uses, cost: left to the cost module
    manifest = load(
        project_dir,
        "project: demeter\n"
        "targets:\n"
        "  local:\n"
        "  laptop: {provider: local, max_workers: 0, memory: auto}\n"
        "  'tcp://head:8786': {provider: address}\n"
        "  shared: {provider: address, address: 'tls://head:8786'}\n"
        "  hpc:\n"
        "    provider: slurm\n"
        "    queue: short\n"
        "    account: my-acct\n"
        "    walltime: '2-12:30:00'\n"
        "    cores: 8\n"
        "    processes: 2\n"
        "    memory: 64GiB\n"
        "    job_extra: ['--exclusive']\n"
        "    cost: {cpu_hour: 0.05, anything: else}\n"
        "  cloud: {provider: AWS}\n"
        "components:\n"
        "  sim: {cpus: 0.5, memory: 512M, gpus: 1, image: sim:latest}\n"
        "  big: {cpus: 64, memory: 17179869184}\n"
        "tasks:\n"
        "  run_simulation: {component: sim}\n",
    )
    assert manifest.project == "demeter"
    assert manifest.task_requests() == {
        "run_simulation": {
            "component": "sim",
            "resources": {"cpus": 0.5, "memory": "512M", "gpus": 1},
        }
    }


def test_sizes_read_as_slurm_and_dask_do():
    assert size_bytes("16G") == size_bytes("16Gi") == size_bytes("16GiB") == 16 * 2**30
    assert size_bytes("16GB") == 16 * 10**9
    assert size_bytes("512m") == 512 * 2**20
    assert size_bytes(1024) == size_bytes("1024") == 1024
    assert size_bytes("16 gigs") is None and size_bytes(True) is None


def test_unknown_top_level_key_is_a_warning_and_stays_in_the_hash(project_dir):
    with pytest.warns(ManifestWarning) as caught:
        manifest = load(project_dir, DESIGN_MANIFEST + "taks:\n  summarize: {component: sim}\n")
    (warning,) = caught
    assert str(warning.message) == (
        "scalable.yaml: unknown top-level key 'taks' is ignored "
        "(known: version, project, targets, components, tasks); did you mean 'tasks'?"
    )
    assert warning.filename == __file__  # points at the caller, not at the manifest module
    assert "taks" in manifest.data
    assert manifest.hash != Manifest.from_dict(load(project_dir, DESIGN_MANIFEST).data).hash


# --- target choice -------------------------------------------------------------------------
TARGETS = """\
version: 1
targets:
  local: {provider: local, max_workers: 2}
  big: {provider: local, max_workers: 8}
  hpc: {provider: slurm, queue: short}
  hpc2: {provider: slurm, queue: long}
"""


@pytest.fixture
def no_target_env(monkeypatch):
    for name in ("SCALABLE_TARGET", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_target_choice_order(project_dir, no_target_env):
    monkeypatch = no_target_env
    manifest = load(project_dir, TARGETS)
    # nothing set: local (the manifest's target of that name)
    assert choose_target(manifest, None, os.environ) == (
        "local",
        {"provider": "local", "max_workers": 2},
        "local",
    )
    # inside a Slurm allocation: the first target whose provider is slurm
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert choose_target(manifest, None, os.environ)[0] == "hpc"
    # $SCALABLE_TARGET over the allocation
    monkeypatch.setenv("SCALABLE_TARGET", "big")
    assert choose_target(manifest, None, os.environ) == (
        "big",
        {"provider": "local", "max_workers": 8},
        "local",
    )
    # the argument over everything
    assert choose_target(manifest, "hpc2", os.environ)[::2] == ("hpc2", "slurm")
    assert choose_target(manifest, "tcp://10.0.0.1:8786", os.environ) == (
        "tcp://10.0.0.1:8786",
        {},
        "address",
    )
    # env defaults to os.environ
    assert choose_target(manifest)[0] == "big"


def test_slurm_allocation_without_a_slurm_provider_target(project_dir, no_target_env):
    env = {"SLURM_JOB_ID": "7"}
    # a target named slurm (whatever its provider says)
    named = Manifest.from_dict({"targets": {"slurm": {"provider": "local", "max_workers": 1}}})
    assert choose_target(named, None, env) == (
        "slurm",
        {"provider": "local", "max_workers": 1},
        "local",
    )
    # none in the manifest, or no manifest: the slurm provider with its defaults
    assert choose_target(Manifest.from_dict({"version": 1}), None, env) == ("slurm", {}, "slurm")
    assert choose_target(None, None, env) == ("slurm", {}, "slurm")
    assert choose_target(None, None, {}) == ("local", {}, "local")


def test_unknown_target_names_where_it_came_from(project_dir, no_target_env):
    manifest = load(project_dir, TARGETS)
    with pytest.raises(ManifestError) as error:
        choose_target(manifest, None, {"SCALABLE_TARGET": "hcp"})
    assert str(error.value) == (
        "scalable.yaml: targets: expected one of the manifest's targets (big, hpc, hpc2, "
        "local), a provider name such as local or slurm, or a scheduler address "
        "(tcp://host:8786), found 'hcp' (from $SCALABLE_TARGET)"
    )
    with pytest.raises(ManifestError) as error:
        choose_target(None, "lcoal", {})
    assert str(error.value) == (
        "target: expected a provider name such as local or slurm, or a scheduler address "
        "(tcp://host:8786), found 'lcoal' (from the target argument)"
    )


def test_session_target_choice_without_starting_anything(project_dir, no_target_env):
    monkeypatch = no_target_env
    manifest = load(project_dir, TARGETS)
    # inside a Slurm allocation the manifest's first slurm target is chosen
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    session = ScalableSession(manifest=manifest)
    assert (session.target, session.provider) == ("hpc", "slurm")
    assert ScalableSession(target="hpc2", manifest=manifest).provider == "slurm"
    # what the session cannot run yet is a clear ValueError, never a crash
    pbs = Manifest.from_dict({"targets": {"grid": {"provider": "pbs"}}})
    with pytest.raises(ValueError) as error:
        ScalableSession(target="grid", manifest=pbs)
    assert str(error.value) == (
        "target 'grid': provider 'pbs' is not supported yet (use 'local', 'slurm' or a "
        "scheduler address)"
    )
    session = ScalableSession(target="local", manifest=manifest)
    assert (session.target, session.provider, session.n_workers) == ("local", "local", 2)
    # scheduler addresses: from $SCALABLE_TARGET, or a manifest target of provider address
    monkeypatch.setenv("SCALABLE_TARGET", "tcp://127.0.0.1:8786")
    session = ScalableSession()
    assert (session.target, session.provider, session.settings) == (
        "tcp://127.0.0.1:8786",
        "address",
        {},
    )
    shared = {"targets": {"shared": {"provider": "address", "address": "tcp://head:8786"}}}
    session = ScalableSession(target="shared", manifest=shared)
    assert (session.target, session.provider) == ("tcp://head:8786", "address")


# --- the hash ------------------------------------------------------------------------------
def test_hash_is_of_the_content_not_its_formatting(project_dir):
    design = load(project_dir, DESIGN_MANIFEST)
    # block style, other key order, comments, other quoting: the same content
    reordered = load(
        project_dir,
        "# the demeter project\n"
        "tasks:\n"
        "  run_simulation:\n"
        "    component: sim\n"
        "components:\n"
        "  sim:\n"
        '    memory: "16G"   # per task\n'
        "    cpus: 4\n"
        "targets:\n"
        "  hpc: {walltime: '01:00:00', account: my-acct, queue: short, provider: slurm}\n"
        "  local:\n"
        "    threads_per_worker: 1\n"
        "    max_workers: 2\n"
        "    provider: local\n"
        "project:\n"
        "  name: demeter-lulcc\n"
        "version: 1\n",
    )
    assert reordered.text != design.text
    assert reordered.hash == design.hash == Manifest.from_dict(dict(design.data)).hash
    # pinned: runs recorded before stay comparable with runs recorded after
    assert design.hash == (
        "sha256:9378d434c4599602b3490f3acc44cb11b1ad2156c4bc7ef814a959c87015fb17"
    )
    changed = load(project_dir, DESIGN_MANIFEST.replace("cpus: 4", "cpus: 2"))
    assert changed.hash != design.hash


# --- a real session from a YAML manifest ---------------------------------------------------
def test_session_from_yaml_records_manifest_hash_and_requested_resources(project_dir):
    path = project_dir / "scalable.yaml"
    path.write_text(
        "version: 1\n"
        "project: {name: demeter-lulcc}\n"
        "targets:\n"
        "  local: {provider: local, max_workers: 2, threads_per_worker: 1}\n"
        "  hpc: {provider: slurm, queue: short, walltime: '01:00:00'}\n"
        "components:\n"
        "  sim: {cpus: 4, memory: 16G}\n"
        "  post: {cpus: 1, memory: 512M, gpus: 0}\n"
        "tasks:\n"
        "  inc: {component: sim}\n"
        "  summarize: {component: post}\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ManifestWarning)
        session = ScalableSession.from_yaml(path, target="local", n_workers=1)
    with session as s:
        assert s.gather(s.submit(workloads.add, s.submit(workloads.inc, 1), 10)) == 12
    assert (s.n_workers, s.threads_per_worker) == (1, 1)  # the argument over the target

    assert (s.run_dir / "manifest.yaml").read_text() == path.read_text()
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["manifest_hash"] == Manifest.load(path).hash
    assert (run["target"], run["provider"], run["project"]) == ("local", "local", "demeter-lulcc")

    plan = orjson.loads((s.run_dir / "plan.json").read_bytes())
    assert plan["manifest_hash"] == run["manifest_hash"]
    assert plan["tasks"] == {
        "inc": {"cpus": 4, "memory": "16G", "component": "sim"},
        "summarize": {"cpus": 1, "memory": "512M", "gpus": 0, "component": "post"},
    }
    graph = {entry["task"]: entry for entry in plan["graph"]}
    assert set(graph) == {"inc", "add"}
    inc = graph["inc"]
    assert inc["component"] == "sim" and inc["resources"] == {"cpus": 4, "memory": "16G"}
    assert inc["key"].startswith("inc-") and inc["dependencies"] == []
    # a task the manifest does not name has no request
    assert graph["add"] == {
        "key": graph["add"]["key"],
        "task": "add",
        "dependencies": [inc["key"]],
    }
