"""An analytics team's Python client (confluent-kafka over SASL_SSL) reading a de-identified
analytics topic with read_committed, as the `analytics` principal; and the regional stores'
principal refused the same topic. Run by the Rust end-to-end test
`killing_the_deidentifier_repeatedly_publishes_every_event_exactly_once`
(tests/tests/deidentifier.rs), which passes the topic in LIENTHONG_ANALYTICS_TEST_TOPIC."""

import os
import time
import uuid

from confluent_kafka import Consumer, KafkaError

from lienthong_env import kafka_settings

TOPIC = os.environ["LIENTHONG_ANALYTICS_TEST_TOPIC"]


def consumer(user):
    return Consumer({**kafka_settings(user), "group.id": f"analytics-test-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "isolation.level": "read_committed"})


def test_the_analytics_principal_reads_committed_framed_analytics_events():
    c = consumer("analytics")
    try:
        c.subscribe([TOPIC])
        got, deadline = 0, time.monotonic() + 60
        while got < 100 and time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value[0] == 0, "not Confluent-framed"
            assert len(msg.key()) == 64, "the key is the analytics patient key (64 hex)"
            got += 1
        assert got == 100, f"only {got} analytics events within 60 s"
    finally:
        c.close()


def test_another_principal_is_refused_the_analytics_topic():
    c = Consumer({**kafka_settings("regional"), "group.id": "lienthong-regional-analytics-probe",
                  "enable.auto.commit": False})
    try:
        c.subscribe([TOPIC])
        deadline, refused = time.monotonic() + 30, None
        while time.monotonic() < deadline and refused is None:
            msg = c.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is not None, "the regional principal received an analytics message"
            if msg.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                refused = msg.error()
        assert refused is not None, "no topic authorization error within 30 s"
    finally:
        c.close()
