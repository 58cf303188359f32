"""An analytics team's Python client (confluent-kafka over SASL_SSL, principal `analytics`)
asking for a document topic: the broker's authorizer refuses it. Run by the Rust end-to-end
test `an_analytics_client_in_python_is_refused_document_topics` (tests/tests/security.rs)."""

import time

from confluent_kafka import Consumer, KafkaError

from lienthong_env import kafka_settings


def test_analytics_principal_gets_a_topic_authorization_error_on_documents():
    consumer = Consumer({**kafka_settings("analytics"), "group.id": "analytics-refusal-test", "enable.auto.commit": False})
    try:
        consumer.subscribe(["lienthong.referral.v1"])
        deadline = time.monotonic() + 30
        refused = None
        while time.monotonic() < deadline and refused is None:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is not None, "an analytics principal received a document message"
            if msg.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                refused = msg.error()
        assert refused is not None, "no topic authorization error within 30 s"
    finally:
        consumer.close()
