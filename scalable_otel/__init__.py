"""scalable-otel: OpenTelemetry-native telemetry for Dask task workflows.

from scalable_otel import ScalableSession, cacheable

with ScalableSession(target="local", n_workers=2) as session:
    results = session.gather(session.map(run_simulation, range(100)))
"""

__version__ = "0.1.0"

from .cache import cacheable  # noqa: E402
from .manifest import Manifest, ManifestError  # noqa: E402
from .session import ScalableSession  # noqa: E402
from .telemetry import telemetry_disabled  # noqa: E402

__all__ = [
    "ScalableSession",
    "cacheable",
    "Manifest",
    "ManifestError",
    "telemetry_disabled",
    "__version__",
]
