"""The document topics' wire format read by another language's standard client:
confluent-kafka's consumer with its SchemaRegistryClient and ProtobufDeserializer, message
classes generated from proto/ with grpcio-tools, as the admin principal (analytics teams read
the de-identified topics instead: analytics_reads.py). Run by the Rust end-to-end test
`python_reads_rust_events`, which publishes the events and passes their coordinates and
expected field values in LIENTHONG_MANIFEST.
"""

import importlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from lienthong_env import kafka_settings, registry_settings

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def manifest():
    path = os.environ.get("LIENTHONG_MANIFEST")
    assert path, "LIENTHONG_MANIFEST is not set: run this through `cargo test` (tests/tests/python_subscriber.rs)"
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def classes(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", *protos],
        check=True,
    )
    sys.path.insert(0, str(out))
    return {
        "lienthong.referral.v1": importlib.import_module("lienthong.v1.referral_pb2").ReferralEvent,
        "lienthong.appointment.v1": importlib.import_module("lienthong.v1.appointment_pb2").AppointmentEvent,
        "lienthong.lab-result.v1": importlib.import_module("lienthong.v1.lab_result_pb2").LabResultEvent,
    }


def test_python_decodes_every_rust_event_through_the_registry(manifest, classes):
    registry = SchemaRegistryClient(registry_settings(manifest["registry_url"]))
    consumer = Consumer({
        **kafka_settings(),
        "group.id": "lienthong-python-test",
        "enable.auto.commit": False,
    })
    # Without a registry client the deserializer reads the frame (magic byte, schema id,
    # message indexes) and parses with the generated class; Apicurio's Confluent API does not
    # serve `format=serialized` schemas, which the client-side schema fetch asks for.
    deserializers = {t: ProtobufDeserializer(c, {"use.deprecated.format": False}) for t, c in classes.items()}
    try:
        for expected in manifest["events"]:
            topic = expected["topic"]
            consumer.assign([TopicPartition(topic, expected["partition"], expected["offset"])])
            msg = consumer.poll(15.0)
            assert msg is not None and msg.error() is None, f"no message at {expected}"
            assert msg.offset() == expected["offset"]
            assert msg.key().decode() == expected["key"]
            value = msg.value()
            assert value[0] == 0, "Confluent magic byte"
            schema_id = int.from_bytes(value[1:5], "big")
            # The schema id resolves in the registry to the topic's schema, which imports common.proto.
            schema = registry.get_schema(schema_id)
            assert schema.schema_type == "PROTOBUF"
            assert f"message {classes[topic].DESCRIPTOR.name} " in schema.schema_str
            assert [r.name for r in schema.references] == ["lienthong/v1/common.proto"]
            event = deserializers[topic](value, SerializationContext(topic, MessageField.VALUE))
            header = event.header
            assert header.event_id == expected["event_id"]
            assert header.document_id == expected["document_id"]
            assert header.document_version == expected["document_version"]
            assert header.patient_key == expected["key"]
            assert header.source_facility_code == expected["source_facility_code"]
            if topic == "lienthong.referral.v1":
                assert event.slip.patient.full_name == expected["patient_name"]
                assert event.slip.clinical_signs == expected["text"]
                assert event.slip.signature.hex() == expected["signature_hex"]
                assert event.slip.receiving.code == expected["receiving"]
            elif topic == "lienthong.appointment.v1":
                assert event.appointment.patient.full_name == expected["patient_name"]
                assert event.appointment.appointment_at.value == expected["text"]
            else:
                assert event.report.patient.full_name == expected["patient_name"]
                assert event.report.service_code == expected["text"]
                assert [l.value_numeric.value for l in event.report.lines] == expected["values"]
    finally:
        consumer.close()
