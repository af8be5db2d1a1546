"""A Prefect flow whose tasks run on Dask through prefect-dask's `DaskTaskRunner`,
recorded by scalable-otel with no change to the flow.

    pip install prefect prefect-dask      # not dependencies of scalable-otel
    python examples/prefect_flow.py       # or: opentelemetry-instrument python ... (no
                                          # DaskInstrumentor line needed then)
    scalable report                       # one run: 8 `square` tasks and one `total`

The task runner starts a `LocalCluster` and connects a `PrefectDaskClient` (a
`distributed.Client`) to it: that client records the run, finished when the flow ends.
"""

from prefect import flow, task
from prefect_dask import DaskTaskRunner

from scalable_otel import DaskInstrumentor


@task
def square(x):
    return x * x


@task
def total(values):
    return sum(values)


@flow(
    task_runner=DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"}
    )
)
def squares(n: int = 8) -> int:
    return total.submit(square.map(range(n))).result()


if __name__ == "__main__":
    DaskInstrumentor().instrument()
    print("total:", squares())
