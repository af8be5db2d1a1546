"""The `scalable` command line on run directories made by the real SDK."""

import re
import subprocess
import sys

import click
from click.testing import CliRunner

from scalable_otel.cli import main


def invoke(*args, cwd=None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_report_last_prints_the_tutorial_sections(demo_project, monkeypatch):
    result = invoke("report", "--last", cwd=demo_project, monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"^Run Report: run-\d{8}T\d{6}Z-quickstart-[0-9a-f]{8}$", out, re.M)
    assert "Target:    local (provider: local)" in out
    assert re.search(r"^Status:    failed$", out, re.M)  # two scenarios fail
    assert re.search(r"^  Submitted:     \d+$", out, re.M)
    assert re.search(r"^  Failed:        2$", out, re.M)
    assert re.search(r"^  Max duration:  \d+\.\d+s \(\w+", out, re.M)
    assert re.search(r"^  Peak:             2$", out, re.M)
    assert re.search(r"^  Avg utilization:  \d+%$", out, re.M)
    assert re.search(r"^  Lookups:  30$", out, re.M)
    assert re.search(r"^  Hits:     28 \(93%\)$", out, re.M)
    assert "Estimated Cost: $0.00 (local provider)" in out


def test_report_of_first_run_says_no_prior_cache(demo_project, demo_run, monkeypatch):
    result = invoke("report", demo_run.name[:30], cwd=demo_project, monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert "Hits:     0 (0%) — first run, no prior cache" in result.output
    assert "Misses:   30" in result.output


def test_report_json_and_output_file(demo_project, tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    result = invoke(
        "report",
        "--latest",
        "--format",
        "json",
        "--output",
        str(target),
        cwd=demo_project,
        monkeypatch=monkeypatch,
    )
    assert result.exit_code == 0
    import json

    data = json.loads(target.read_text())
    assert data["cache"]["hits"] == 28 and data["tasks"]["failed"] == 2


def test_every_command_has_help_with_examples():
    assert set(main.commands) == {
        "advise",
        "demo",
        "export",
        "report",
        "runs",
        "trends",
        "watch",
        "whatif",
    }
    assert len(CliRunner().invoke(main, ["--help"]).output) > 100
    for name in main.commands:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, name
        for option in main.commands[name].params:
            if isinstance(option, click.Option) and option.name != "help":
                assert option.help, f"{name} {option.opts[0]} has no help"


def test_demo_command_runs_the_quickstart(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "scalable_otel.cli", "demo", "--scenarios", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Run directory: " in done.stdout and "Run Report: run-" in done.stdout
    runs = list((tmp_path / ".scalable" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "tasks.jsonl").stat().st_size > 0
