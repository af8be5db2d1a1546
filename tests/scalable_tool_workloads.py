"""Task functions using JGCRI's Scalable tool (the `scalable` package), importable by workers.

They are decorated at import, before any test instruments anything, as in a user's code.
"""

from scalable.caching import FileType, ValueType, cacheable


@cacheable(return_type=ValueType)
def simulate(scenario):
    return scenario * 10


def simulate_inside(scenario):
    """A task (pickled by reference) that calls a cacheable function on the worker."""
    return simulate(scenario)


@cacheable(return_type=FileType, check_output=True, path=ValueType)
def write_output(path):
    with open(path, "w") as f:
        f.write("fresh")
    return path


@cacheable
def crash(scenario):
    raise ValueError(f"scenario {scenario} diverged")
