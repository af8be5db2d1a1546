"""A scrape endpoint on port 0: run.json names its real address while the run goes on."""

from urllib.parse import urlsplit
from urllib.request import urlopen

import orjson
import pytest

from scalable_otel import ExportOptions, RecordingOptions, ScalableSession
from tests import workloads
from tests.conftest import wait_for


@pytest.mark.parametrize("recorder", ["process", "thread"])
def test_a_free_port_is_named_in_run_json_while_the_run_goes_on(project_dir, recorder):
    with ScalableSession(
        target="local",
        n_workers=1,
        threads_per_worker=1,
        project="scrape",
        exports=ExportOptions(prometheus_port=0),
        recording=RecordingOptions(recorder=recorder),
    ) as s:
        assert s.gather(s.map(workloads.inc, range(3))) == [1, 2, 3]
        meta = orjson.loads((s.run_dir / "run.json").read_bytes())
        url = meta["exporters"]["prometheus"]
        port = urlsplit(url if "://" in url else f"http://{url}").port
        assert port, url  # a real port, not the 0 that was asked for

        def scraped() -> bool:
            with urlopen(url, timeout=5) as response:
                return b"scalable_tasks_completed_total" in response.read()

        wait_for(scraped)
    final = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert final["exporters"]["prometheus"] == url  # the same address from start to end
