"""A client in Python computes lienthong's ids with its standard library alone (uuid.uuid5),
as proto/lienthong/v1/common.proto specifies, and matches the published test vectors. Run by
the Rust test `python_computes_the_published_ids` (tests/tests/python_subscriber.rs)."""

import json
import pathlib
import uuid

VECTORS = pathlib.Path(__file__).resolve().parents[2] / "proto/lienthong/v1/ids.test-vectors.json"


def event_id(namespace, kind, document_id, version):
    return str(uuid.uuid5(namespace, f"{kind}\n{document_id}\n{version}"))


def test_event_ids_match_the_vectors():
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    namespace = uuid.UUID(vectors["namespace"])
    assert len(vectors["event_ids"]) >= 6
    for v in vectors["event_ids"]:
        assert event_id(namespace, v["kind"], v["document_id"], v["document_version"]) == v["event_id"], v


def test_document_ids_match_the_vectors():
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    for v in vectors["document_ids"]:
        if v["kind"] == "lab-report":
            built = f"lab-report/{v['facility'].strip()}/{v['episode'].strip()}/{v['service_code'].strip()}"
        else:
            built = f"{v['kind']}/{v['facility'].strip()}/{v['slip_number'].strip()}"
        assert built == v["document_id"], v
