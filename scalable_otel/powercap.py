"""Measured energy: a host's Linux powercap (Intel/AMD RAPL) counters.

The kernel exposes each RAPL zone as a directory of `/sys/class/powercap`
(`$SCALABLE_POWERCAP_DIR` overrides the root): `intel-rapl:0/energy_uj` is the
package's energy counter in microjoules, `max_energy_range_uj` the value it wraps at,
`name` the zone's name (`package-0`, `dram`, `psys`). Zones counted:

- `psys` (the whole platform) where the machine has it, and then nothing else, since
  it covers the packages and memory;
- else every top-level zone (`intel-rapl:N`, `amd-rapl:N`: one per processor package)
  and the `dram` subzones (`intel-rapl:N:M` named `dram`: memory, outside the package).

A counter that cannot be read (since Linux 5.10 `energy_uj` is readable by root only)
is left out; with none readable there is no measurement and readers estimate instead.

A counter is the host's, not a worker's: several workers on one host read the same
counter, so totals are kept per host and zone (`CounterTotals`), never summed over
workers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

POWERCAP_ENV = "SCALABLE_POWERCAP_DIR"
DEFAULT_ROOT = "/sys/class/powercap"
_TOP = re.compile(r"^[a-z0-9-]+:\d+$")
_SUB = re.compile(r"^[a-z0-9-]+:\d+:\d+$")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def zones(root: str | os.PathLike | None = None) -> list[Path]:
    """The zone directories to count under `root` (default: $SCALABLE_POWERCAP_DIR, else
    /sys/class/powercap), as the module docstring chooses them."""
    base = Path(root or os.environ.get(POWERCAP_ENV) or DEFAULT_ROOT)
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    top = [p for p in entries if _TOP.match(p.name)]
    subs = {p.name: p for p in entries if _SUB.match(p.name)}
    for zone in top:  # subzones nested in their package, as the kernel also lays them out
        try:
            subs.update({p.name: p for p in zone.iterdir() if _SUB.match(p.name)})
        except OSError:
            pass
    names = {p: _read(p / "name") for p in top + list(subs.values())}
    platform = [p for p in top if names[p] == "psys"]
    if platform:
        return platform
    return top + [subs[n] for n in sorted(subs) if names[subs[n]] == "dram"]


def read_counters(zone_dirs: list[Path] | None = None) -> tuple[dict, dict] | None:
    """({zone: energy_uj}, {zone: max_energy_range_uj}) of the readable zones, or None.

    `zone_dirs` are those `zones()` chose (default: look them up now). A zone is its
    directory name (`intel-rapl:0`). Never raises.
    """
    energy, ranges = {}, {}
    for zone in zones() if zone_dirs is None else zone_dirs:
        value = _int(_read(zone / "energy_uj"))
        if value is None:
            continue
        energy[zone.name] = value
        ranges[zone.name] = _int(_read(zone / "max_energy_range_uj")) or 0
    return (energy, ranges) if energy else None


def counter_delta(previous: int, value: int, max_range: int) -> int:
    """Microjoules between two readings of one counter, across a wrap.

    A reading below the previous one is a wrap when it fell by more than half the range
    (the counter went past `max_range` and restarted at 0); a smaller fall is a reading
    that arrived out of order, which adds nothing. So is a rise of more than half the
    range (a reading from before a wrap, ordered after one from after it: at a real
    counter's range, 262 kJ or more, half of it within a sampling interval is no power
    a host draws).

    >>> counter_delta(100, 250, 1000), counter_delta(900, 50, 1000), counter_delta(900, 880, 1000)
    (150, 150, 0)
    >>> counter_delta(50, 900, 1000)
    0
    """
    if value >= previous:
        if max_range and value - previous > max_range / 2:
            return 0
        return value - previous
    if max_range and previous - value > max_range / 2:
        return max_range - previous + value
    return 0


class CounterTotals:
    """Microjoules per host and zone from readings in the order taken (out-of-order and
    repeated readings of the same counter by several workers of one host add nothing)."""

    def __init__(self):
        self._last: dict = {}  # (host, zone) -> highest reading taken as the latest
        self.uj: dict = {}  # host -> {zone: microjoules}
        self.readings: dict = {}  # host -> number of readings

    def add(self, host: str, energy: dict, ranges: dict | None = None) -> int:
        """Take one reading of `host`'s counters; returns the microjoules it added."""
        added = 0
        self.readings[host] = self.readings.get(host, 0) + 1
        zones_uj = self.uj.setdefault(host, {})
        for zone, value in energy.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                continue
            previous = self._last.get((host, zone))
            zones_uj.setdefault(zone, 0)
            if previous is None:
                self._last[(host, zone)] = value
                continue
            max_range = (ranges or {}).get(zone)
            max_range = max_range if isinstance(max_range, int) and max_range > 0 else 0
            delta = counter_delta(previous, value, max_range)
            if delta or value == previous:
                self._last[(host, zone)] = value
            zones_uj[zone] += delta
            added += delta
        return added

    def host_uj(self, host: str) -> int:
        return sum(self.uj.get(host, {}).values())
