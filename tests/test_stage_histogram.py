"""spendgate_stage_seconds: the service's own histogram renders exactly what prometheus-client's would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from spendgate.metrics import _LATENCY_BUCKETS, PHASES, STAGES, Metrics


@given(st.lists(st.tuples(st.sampled_from(PHASES), st.sampled_from(STAGES),
                          st.sampled_from(_LATENCY_BUCKETS) | st.floats(min_value=0, max_value=10)), max_size=40))
def test_stage_histogram_renders_what_prometheus_clients_histogram_renders(
    observations: list[tuple[str, str, float]],
) -> None:
    """The same observations (on a bucket's bound too) give the same buckets, counts and sums."""
    ours = Metrics(process=False)
    reference_registry = CollectorRegistry()
    reference = Histogram("spendgate_stage_seconds", "reference", ["phase", "stage"], buckets=_LATENCY_BUCKETS,
                          registry=reference_registry)
    for phase in PHASES:
        for stage in STAGES:
            reference.labels(phase, stage)
    for phase, stage, seconds in observations:
        ours.observe_stages(phase, {stage: seconds})
        reference.labels(phase, stage).observe(seconds)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        families = [family.name for family in registry.collect()]
        assert families.count("spendgate_stage_seconds") == 1 and not [f for f in families if "stage" in f
                                                                       and f != "spendgate_stage_seconds"]
        text = generate_latest(registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) if family.name.startswith("spendgate_stage_seconds")
            for s in family.samples
        }

    rendered, expected = samples(ours.registry), samples(reference_registry)
    created = {key for key in expected if key[0].endswith("_created")}
    assert {key for key in rendered if key[0].endswith("_created")} == created  # when each series began
    assert {k: v for k, v in rendered.items() if k not in created} == pytest.approx(
        {k: v for k, v in expected.items() if k not in created})
    assert len(rendered) == len(PHASES) * len(STAGES) * (len(_LATENCY_BUCKETS) + 4)  # +Inf, count, sum, created
