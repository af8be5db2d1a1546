"""A run's metrics mirrored on a meter provider of the caller's (`telemetry.mirrored_meter`),
without a cluster: the run's own instruments come first, a failing mirror costs a warning."""

import logging

from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from scalable_otel.telemetry import mirrored_meter


def _points(reader, name):
    return [
        point
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_finished_runs_keep_their_counts_and_measurements_reach_both_meters():
    own_reader, mirror_reader = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[mirror_reader])
    finished = {"a": False, "b": False}
    meters = {}
    for run, count in (("a", 2), ("b", 3)):  # two runs, each with a pipeline of its own
        own = MeterProvider(metric_readers=[own_reader] if run == "a" else []).get_meter(run)
        meters[run] = mirrored_meter(own, provider, lambda run=run: finished[run])
        meters[run].create_observable_counter("done", [lambda options, n=count: [Observation(n)]])
    meters["a"].create_histogram("duration").record(1.5)
    assert [p.sum for p in _points(own_reader, "duration")] == [1.5]
    assert [p.sum for p in _points(mirror_reader, "duration")] == [1.5]
    assert [p.value for p in _points(mirror_reader, "done")] == [5]
    finished["a"] = True
    assert [p.value for p in _points(mirror_reader, "done")] == [5]
    assert [p.value for p in _points(mirror_reader, "done")] == [5]  # run a's count is kept


def test_a_failing_mirror_leaves_the_runs_own_metrics_with_one_warning(caplog):
    class Broken:
        def get_meter(self, *args, **kwargs):
            raise RuntimeError("no meter here")

    own = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("own")
    caplog.set_level(logging.WARNING)
    assert mirrored_meter(own, Broken(), lambda: False) is own

    class BrokenInstruments:
        def get_meter(self, *args, **kwargs):
            return self

        def __getattr__(self, name):
            raise RuntimeError("no instruments here")

    meter = mirrored_meter(own, BrokenInstruments(), lambda: False)
    first = meter.create_histogram("duration")
    second = meter.create_gauge("memory")
    first.record(1.0)
    second.set(2.0)
    warnings = [r.getMessage() for r in caplog.records if "not mirrored" in r.getMessage()]
    assert len(warnings) == 2  # one for each run, each run's own metrics intact
