"""A one-node Slurm (Debian's slurm-wlm and munge) for tests, on 127.0.0.1 only.

    from tests.integration.slurm import slurm   # noqa: F401  (the fixture)

The fixture writes a slurm.conf in a temporary directory, starts munged, slurmctld and
slurmd, waits until the node is idle, sets SLURM_CONF for the test process (sbatch and
scancel read it), and at the end cancels every job and stops the three daemons. Without
the binaries the tests are skipped, or fail when $SCALABLE_CI is set. Slurm's ports
(6817, 6818) are fixed: one such Slurm at a time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scancel", "sinfo")
INSTALL = "apt-get install -y --no-install-recommends slurm-wlm munge"


def _missing() -> list[str]:
    return [b for b in BINARIES if not (shutil.which(b) or Path(f"/usr/sbin/{b}").exists())]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _config(folder: Path, host: str) -> str:
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return "\n".join(
        [
            "ClusterName=scalable-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} "
            f"RealMemory={max(1024, total_mb - 1024)} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SlurmUser=root",
            "SlurmdUser=root",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            f"StateSaveLocation={folder}/state",
            f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldPidFile={folder}/slurmctld.pid",
            f"SlurmdPidFile={folder}/slurmd.pid",
            f"SlurmctldLogFile={folder}/slurmctld.log",
            f"SlurmdLogFile={folder}/slurmd.log",
            "",
        ]
    )


class Slurm:
    def __init__(self, folder: Path, host: str):
        self.folder, self.host = folder, host
        self.conf = folder / "slurm.conf"
        self.processes: list[subprocess.Popen] = []

    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *argv, timeout=15) -> str:
        done = subprocess.run(
            [_binary(argv[0]), *argv[1:]],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done.stdout

    def start(self) -> None:
        (self.folder / "state").mkdir()
        (self.folder / "spool").mkdir()
        self.conf.write_text(_config(self.folder, self.host))
        subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "/run/munge"], check=True)
        munged = [
            "setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
            _binary("munged"), "--foreground",
        ]  # fmt: skip
        self._spawn(munged, "munged.out")
        self._wait(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0)
        self._spawn([_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        time.sleep(0.5)
        self._spawn([_binary("slurmd"), "-D", "-N", self.host, "-f", str(self.conf)], "slurmd.out")
        self._wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T", timeout=10), 60)

    def _spawn(self, argv, log: str) -> None:
        out = open(self.folder / log, "wb")
        self.processes.append(
            subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env())
        )

    def _wait(self, ready, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.3)
        logs = "\n".join(
            p.name + ": " + p.read_text(errors="replace")[-800:]
            for p in sorted(self.folder.glob("*.log")) + sorted(self.folder.glob("*.out"))
        )
        raise RuntimeError(f"Slurm did not start within {timeout} s\n{logs}")

    def jobs(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i").split()

    def stop(self) -> None:
        try:
            self.run("scancel", "--user=root", timeout=10)
        except (subprocess.SubprocessError, OSError):
            pass
        for process in reversed(self.processes):  # slurmd, slurmctld, munged
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = _missing()
    if missing:
        message = f"Slurm is not installed ({', '.join(missing)} missing): {INSTALL}"
        if os.environ.get("SCALABLE_CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = Slurm(tmp_path_factory.mktemp("slurm"), socket.gethostname().split(".")[0])
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
