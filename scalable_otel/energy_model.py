"""Energy and carbon by the Green Algorithms method, and the constants it takes.

The method (Lannelongue, Grealey & Inouye, "Green Algorithms: Quantifying the Carbon
Footprint of Computation", Advanced Science 2021, doi:10.1002/advs.202100707;
green-algorithms.org)::

    energy = time x (cores x power per core x usage + memory GB x power per GB) x PUE
    carbon = energy x carbon intensity

`cores x usage` is the number of cores kept busy, which is what this package measures
(`cpu_percent / 100` of a resource sample, `cpu_seconds / wall_s` of a task), so
`energy_j` takes it as one figure. Memory counts what is held (Green Algorithms: the
memory *available*, since its power does not depend on use).

The constants and their defaults (`DEFAULTS`), each from the Green Algorithms tool's data
(v2.2, github.com/GreenAlgorithms/green-algorithms-tool):

- `power_per_core_w` 12 W: its "Any" processor, the mean thermal design power (TDP) per
  core of its processor list. Or give `processor_tdp_w` and `processor_cores` (the TDP of
  your processor and its core count) and the power per core is their ratio.
- `memory_w_per_gb` 0.3725 W per GB of memory (the paper's figure).
- `pue` 1.67: the world-average power usage effectiveness of data centres (Uptime
  Institute 2019), the tool's default.
- `carbon_intensity` 475 g CO2e per kWh: the tool's world average (`WORLD`).

A target of the manifest sets its own under `energy:` (next to `cost:`), and commands
take `--power-per-core`, `--pue` and `--carbon-intensity` over both:

```yaml
targets:
  hpc:
    provider: slurm
    energy: {processor_tdp_w: 205, processor_cores: 32, pue: 1.2, carbon_intensity: 180}
```

1 GB is 2**30 bytes here, as memory limits and `cost:` count it.
"""

from __future__ import annotations

import math
from numbers import Real

from .errors import ScalableError

GB = 2**30
ENERGY_KEY = "energy"
POWER_PER_CORE = "power_per_core_w"
PROCESSOR_TDP = "processor_tdp_w"
PROCESSOR_CORES = "processor_cores"
MEMORY_POWER = "memory_w_per_gb"
PUE = "pue"
CARBON_INTENSITY = "carbon_intensity"
KEYS = (POWER_PER_CORE, PROCESSOR_TDP, PROCESSOR_CORES, MEMORY_POWER, PUE, CARBON_INTENSITY)

#: Green Algorithms defaults (see the module docstring for their sources).
DEFAULTS: dict[str, float] = {
    POWER_PER_CORE: 12.0,
    MEMORY_POWER: 0.3725,
    PUE: 1.67,
    CARBON_INTENSITY: 475.0,
}
_UNITS = {
    POWER_PER_CORE: "a number of watts",
    PROCESSOR_TDP: "a number of watts",
    PROCESSOR_CORES: "a number of cores",
    MEMORY_POWER: "a number of watts per GB",
    PUE: "a ratio",
    CARBON_INTENSITY: "a number of grams CO2e per kWh",
}

METHOD_ESTIMATED = "Green Algorithms estimate"
METHOD_MEASURED = "measured by RAPL"
J_PER_KWH = 3.6e6


class EnergyError(ScalableError):
    """An `energy:` setting or option that is not a usable constant."""


def _short(value) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge number"
    return text if len(text) <= 60 else text[:57] + "..."


#: The command line's options for the constants it takes.
OPTION_NAMES = {
    POWER_PER_CORE: "--power-per-core",
    PUE: "--pue",
    CARBON_INTENSITY: "--carbon-intensity",
}


def _number(key: str, value, shown: str | None = None) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool)
    try:
        ok = ok and math.isfinite(value)
    except OverflowError:
        ok = False
    positive = key in (PROCESSOR_TDP, PROCESSOR_CORES)
    minimum = 1.0 if key == PUE else 0.0
    if not ok or value < minimum or (positive and value <= 0):
        bound = "1 or more" if key == PUE else "more than 0" if positive else "0 or more"
        name = shown or f"energy.{key}"
        raise EnergyError(f"{name} must be {_UNITS[key]}, {bound}, not {_short(value)}")
    return float(value)


def _checked(settings, where: str) -> dict[str, float]:
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise EnergyError(
            f"{where}energy must be a mapping of {', '.join(KEYS)}, not {_short(settings)}"
        )
    unknown = sorted(str(k) for k in settings if k not in KEYS)
    if unknown:
        raise EnergyError(
            f"{where}unknown key energy.{unknown[0][:40]} (the keys are {', '.join(KEYS)})"
        )
    try:
        values = {k: _number(k, v) for k, v in settings.items() if v is not None}
    except EnergyError as exc:
        raise EnergyError(f"{where}{exc}") from None
    if (PROCESSOR_TDP in values) != (PROCESSOR_CORES in values):
        raise EnergyError(
            f"{where}energy.{PROCESSOR_TDP} and energy.{PROCESSOR_CORES} go together "
            f"(power per core = TDP / cores); or set energy.{POWER_PER_CORE}"
        )
    if PROCESSOR_TDP in values:
        if POWER_PER_CORE in values:
            raise EnergyError(
                f"{where}set energy.{POWER_PER_CORE} or energy.{PROCESSOR_TDP} with "
                f"energy.{PROCESSOR_CORES}, not both"
            )
        values[POWER_PER_CORE] = values.pop(PROCESSOR_TDP) / values.pop(PROCESSOR_CORES)
    return values


def constants(settings: dict | None = None, options: dict | None = None, *, target=None) -> dict:
    """The constants: `options` (the command line) over `settings` (a target's `energy:`)
    over `DEFAULTS`, with where each came from.

    Returns the four constants of `DEFAULTS` and `source`: key -> `default`, `manifest` or
    `option`. A setting that is not a number in its range (PUE 1 or more, the others 0 or
    more), an unknown key, or a TDP without its core count raises `EnergyError`, naming
    `target` when given.

    >>> constants({"processor_tdp_w": 120, "processor_cores": 12})["power_per_core_w"]
    10.0
    >>> constants(options={"pue": 1.2})["source"]["pue"]
    'option'
    """
    where = f"target {target!r}: " if target else ""
    manifest = _checked(settings, where)
    given = {}
    for key, value in (options or {}).items():
        if key not in OPTION_NAMES:
            raise EnergyError(f"no option for energy.{key} (set it under energy: in the manifest)")
        if value is not None:
            given[key] = _number(key, value, OPTION_NAMES[key])
    result: dict = dict(DEFAULTS)
    source = dict.fromkeys(DEFAULTS, "default")
    for values, name in ((manifest, "manifest"), (given, "option")):
        for key, value in values.items():
            result[key] = value
            source[key] = name
    result["source"] = source
    return result


def power_w(cores_busy: float, memory_bytes: float, c: dict) -> float:
    """Watts drawn, before PUE: busy cores x power per core + memory GB x power per GB."""
    return cores_busy * c[POWER_PER_CORE] + memory_bytes / GB * c[MEMORY_POWER]


def energy_j(seconds: float, cores_busy: float, memory_bytes: float, c: dict) -> float:
    """Joules, PUE included, of `seconds` with `cores_busy` cores busy and `memory_bytes` held.

    >>> c = constants()
    >>> round(energy_j(3600, 1, 0, c) / J_PER_KWH, 5)   # one busy core, one hour: 12 W x 1.67
    0.02004
    """
    return seconds * power_w(cores_busy, memory_bytes, c) * c[PUE]


def kwh(joules: float) -> float:
    return joules / J_PER_KWH


def carbon_g(joules: float, c: dict) -> float:
    """Grams CO2e of `joules` at the carbon intensity of `c`."""
    return kwh(joules) * c[CARBON_INTENSITY]
