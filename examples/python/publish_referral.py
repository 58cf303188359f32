"""Publishes one referral slip to the lienthong gateway the way a HIS does: builds the slip,
computes its document id and event id with the standard library, publishes over TLS with a
bearer token, checks ACCEPTED; then publishes an invalid slip and prints the violations.

Environment: LIENTHONG_GATEWAY_URL (https://host:port), LIENTHONG_GATEWAY_CA (the CA of the
gateway's certificate, PEM), LIENTHONG_GATEWAY_TOKEN_FILE (the facility's bearer token).
Needs grpcio and grpcio-tools (requirements.txt); the message classes and the gRPC stub are
generated from ../../proto into a temporary folder at start.

Exit status: 0 when the valid slip was accepted and the invalid one rejected, 1 otherwise.
"""

import base64
import datetime
import importlib
import json
import os
import pathlib
import random
import sys
import tempfile
import uuid

import grpc
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE.parents[1] / "proto"
VECTORS = PROTO / "lienthong/v1/ids.test-vectors.json"

# The namespace of every lienthong event id (proto/lienthong/v1/common.proto).
EVENT_ID_NAMESPACE = uuid.UUID("78f625d9-7786-4190-a2ae-c045bc2670c5")
VIETNAM = datetime.timezone(datetime.timedelta(hours=7))


def referral_document_id(issuer, slip_number):
    """A referral's document id: issuing facility and slip number, each trimmed."""
    return f"referral/{issuer.strip()}/{slip_number.strip()}"


def event_id(kind, document_id, version):
    """UUID version 5 of "kind\\ndocument_id\\nversion" under the lienthong namespace."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{kind}\n{document_id}\n{version}"))


def check_vectors(path=VECTORS):
    """Checks this client's ids against the published test vectors; raises on a mismatch."""
    vectors = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    if uuid.UUID(vectors["namespace"]) != EVENT_ID_NAMESPACE:
        raise ValueError("the vectors name another namespace")
    checked = 0
    for v in vectors["event_ids"]:
        got = event_id(v["kind"], v["document_id"], v["document_version"])
        if got != v["event_id"]:
            raise ValueError(f"event id {got} differs from vector {v}")
        checked += 1
    for v in vectors["document_ids"]:
        if v["kind"] == "referral":
            got = referral_document_id(v["facility"], v["slip_number"])
            if got != v["document_id"]:
                raise ValueError(f"document id {got} differs from vector {v}")
            checked += 1
    return checked


def token_facility(token):
    """The facility a token was issued to (its `sub` claim); the gateway verifies the token."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("the token file does not hold a JWT (three dot-separated parts)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["sub"]


def generated_modules():
    """Compiles proto/ with grpcio-tools and imports the messages and the ingest stub."""
    out = tempfile.mkdtemp(prefix="lienthong-gen-")
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    if protoc.main(["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files]) != 0:
        raise RuntimeError("protoc failed on proto/")
    sys.path.insert(0, out)
    return (
        importlib.import_module("lienthong.v1.common_pb2"),
        importlib.import_module("lienthong.v1.referral_pb2"),
        importlib.import_module("lienthong.v1.ingest_pb2"),
        importlib.import_module("lienthong.v1.ingest_pb2_grpc"),
    )


def referral(common, ref, issuer, receiving, slip_number):
    """A complete referral slip from `issuer` to `receiving`, issued today in Vietnam time."""
    now = datetime.datetime.now(VIETNAM).replace(second=0, microsecond=0)
    admitted, discharged = now - datetime.timedelta(hours=30), now - datetime.timedelta(hours=2)

    def day(t):
        return common.PartialDateTime(value=t.strftime("%Y%m%d"), precision=common.DATE_PRECISION_DAY)

    def minute(t):
        return common.PartialDateTime(value=t.strftime("%Y%m%d%H%M"), precision=common.DATE_PRECISION_MINUTE)

    def doctor(licence, role):
        return common.Practitioner(licence_number=licence, raw=licence, role=role)

    patient = common.Patient(
        citizen_id="079085123456",
        id_kind=common.PERSON_ID_KIND_CITIZEN_ID,
        full_name="Nguyễn Văn An",
        birth_date=common.PartialDateTime(value="19850314", precision=common.DATE_PRECISION_DAY),
        sex=common.SEX_MALE,
        ethnicity_code="01",
        nationality_code="000",
        address="Số 12 đường Lê Lợi, phường Bến Thành",
        residence_province_code="79",
        insurance_cards=[common.InsuranceCard(
            number="DN4790123456789",
            valid_from=day(now - datetime.timedelta(days=300)),
            valid_to=day(now + datetime.timedelta(days=60)),
            registered_facility_code=issuer,
        )],
    )
    slip = ref.ReferralSlip(
        episode_id=f"{issuer}.0000012345",
        record_number="HS000123",
        book_number="0042",
        slip_number=slip_number,
        issuer=common.FacilityRef(code=issuer),
        sending=[common.FacilityRef(code=issuer)],
        receiving=common.FacilityRef(code=receiving),
        patient=patient,
        episode=common.EpisodeDates(admitted_at=minute(admitted), discharged_at=minute(discharged)),
        clinical_signs="Sốt 39°C, ho có đờm, khó thở nhẹ",
        diagnosis=common.Diagnosis(main_icd10="J18.9", secondary_icd10=["I10"], text="Viêm phổi, tăng huyết áp"),
        course_of_illness="Vào viện ngày thứ 3 của bệnh, điều trị kháng sinh không đáp ứng",
        test_summary="X-quang: đám mờ đáy phổi phải; CRP 85 mg/L",
        treatment="Ceftriaxone 2g/ngày",
        discharge_type=ref.DISCHARGE_TYPE_TRANSFERRED_PROFESSIONAL,
        reason=ref.REFERRAL_REASON_BEYOND_CAPABILITY,
        planned_treatment="Chuyển tuyến trên điều trị tiếp",
        transport="Xe cứu thương",
        physician=doctor("012345/HCM-CCHN", common.PRACTITIONER_ROLE_PHYSICIAN),
        head_of_facility=doctor("067890/HCM-CCHN", common.PRACTITIONER_ROLE_HEAD_OF_FACILITY),
        valid_until=day(discharged + datetime.timedelta(days=14)),
        signature=b"<Signature>example</Signature>",
        layout=ref.XML_LAYOUT_QD3176,
        issued_at=day(discharged),
    )
    document_id = referral_document_id(issuer, slip_number)
    header = common.EventHeader(
        event_id=event_id("referral", document_id, 1),
        document_id=document_id,
        document_version=1,
        action=common.ACTION_CREATED,
        source_facility_code=issuer,
        source_system="example-his-python",
        source_system_version="0.1.0",
    )
    header.occurred_at.FromDatetime(discharged.astimezone(datetime.timezone.utc))
    return ref.ReferralEvent(header=header, slip=slip)


def env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        raise SystemExit(f"{name} is not set (source .state/env on the local stack)")
    return value


def main():
    print(f"ids: {check_vectors()} test vectors match")
    common, ref, ingest, ingest_grpc = generated_modules()

    url = env("LIENTHONG_GATEWAY_URL").removeprefix("https://")
    token = pathlib.Path(env("LIENTHONG_GATEWAY_TOKEN_FILE")).read_text(encoding="utf-8").strip()
    facility = token_facility(token)
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=pathlib.Path(env("LIENTHONG_GATEWAY_CA")).read_bytes()),
        grpc.access_token_call_credentials(token),
    )
    receiving = facility[:2] + ("002" if facility.endswith("001") else "001")
    slip_number = f"CT{random.randrange(100_000, 1_000_000)}.P"

    def publish(event):
        request = ingest.PublishRequest(events=[ingest.EventEnvelope(referral=event)], request_id=str(uuid.uuid4()))
        return stub.Publish(request, timeout=30).results[0]

    status = 0
    with grpc.secure_channel(url, credentials) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        try:
            valid = referral(common, ref, facility, receiving, slip_number)
            result = publish(valid)
            print(f"valid slip {valid.header.event_id}: {ingest.Outcome.Name(result.outcome)} "
                  f"{result.topic} partition {result.partition} offset {result.offset}")
            if result.outcome != ingest.OUTCOME_ACCEPTED:
                for v in result.errors:
                    print(f"  {v.code} at {v.path}: {v.message}")
                print(f"  {result.message}")
                status = 1

            # Another slip with a citizen ID of the wrong length and no receiving facility.
            invalid = referral(common, ref, facility, receiving, slip_number + "X")
            invalid.slip.patient.citizen_id = "07908512"
            invalid.slip.ClearField("receiving")
            result = publish(invalid)
            print(f"invalid slip {invalid.header.event_id}: {ingest.Outcome.Name(result.outcome)}")
            for v in result.errors:
                print(f"  {v.code} at {v.path}: {v.message_vi}")
            if result.outcome != ingest.OUTCOME_REJECTED or not result.errors:
                status = 1
        except grpc.RpcError as e:
            print(f"the gateway answered {e.code().name}: {e.details()}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
