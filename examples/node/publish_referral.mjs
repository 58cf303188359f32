// Publishes one referral slip to the lienthong gateway the way a HIS does: builds the slip,
// computes its document id and event id with Node's standard library, publishes over TLS with a
// bearer token, checks ACCEPTED; then publishes an invalid slip and prints the violations.
//
// Environment: LIENTHONG_GATEWAY_URL (https://host:port), LIENTHONG_GATEWAY_CA (the CA of the
// gateway's certificate, PEM), LIENTHONG_GATEWAY_TOKEN_FILE (the facility's bearer token).
// Needs @grpc/grpc-js and @grpc/proto-loader (`npm ci`); the contract is read from ../../proto
// at start, with no code generation.
//
// Exit status: 0 when the valid slip was accepted and the invalid one rejected, 1 otherwise.

import { createHash, randomInt, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const HERE = dirname(fileURLToPath(import.meta.url));
const PROTO = join(HERE, "..", "..", "proto");
const VECTORS = join(PROTO, "lienthong/v1/ids.test-vectors.json");

// The namespace of every lienthong event id (proto/lienthong/v1/common.proto).
const EVENT_ID_NAMESPACE = "78f625d9-7786-4190-a2ae-c045bc2670c5";

/** A referral's document id: issuing facility and slip number, each trimmed. */
export function referralDocumentId(issuer, slipNumber) {
  return `referral/${issuer.trim()}/${slipNumber.trim()}`;
}

/** UUID version 5 (RFC 9562) of `name` under `namespace`: SHA-1, version and variant bits. */
function uuidV5(namespace, name) {
  const ns = Buffer.from(namespace.replaceAll("-", ""), "hex");
  const hash = createHash("sha1").update(ns).update(name, "utf8").digest();
  hash[6] = (hash[6] & 0x0f) | 0x50;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString("hex");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
}

/** UUID version 5 of "kind\ndocument_id\nversion" under the lienthong namespace. */
export function eventId(kind, documentId, version) {
  return uuidV5(EVENT_ID_NAMESPACE, `${kind}\n${documentId}\n${version}`);
}

/** Checks this client's ids against the published test vectors; throws on a mismatch. */
function checkVectors() {
  const vectors = JSON.parse(readFileSync(VECTORS, "utf8"));
  if (vectors.namespace !== EVENT_ID_NAMESPACE) throw new Error("the vectors name another namespace");
  let checked = 0;
  for (const v of vectors.event_ids) {
    const got = eventId(v.kind, v.document_id, v.document_version);
    if (got !== v.event_id) throw new Error(`event id ${got} differs from vector ${JSON.stringify(v)}`);
    checked += 1;
  }
  for (const v of vectors.document_ids) {
    if (v.kind !== "referral") continue;
    const got = referralDocumentId(v.facility, v.slip_number);
    if (got !== v.document_id) throw new Error(`document id ${got} differs from vector ${JSON.stringify(v)}`);
    checked += 1;
  }
  return checked;
}

/** The facility a token was issued to (its `sub` claim); the gateway verifies the token. */
function tokenFacility(token) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("the token file does not hold a JWT (three dot-separated parts)");
  return JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8")).sub;
}

/** Vietnam time (UTC+7, no daylight saving) of `t`, as the fields of a PartialDateTime. */
function vietnam(t, digits) {
  const local = new Date(t.getTime() + 7 * 3600 * 1000).toISOString(); // 2026-12-06T21:05:00.000Z
  const text = local.slice(0, 4) + local.slice(5, 7) + local.slice(8, 10) + local.slice(11, 13) + local.slice(14, 16);
  return text.slice(0, digits);
}

const day = (t) => ({ value: vietnam(t, 8), precision: "DATE_PRECISION_DAY" });
const minute = (t) => ({ value: vietnam(t, 12), precision: "DATE_PRECISION_MINUTE" });
const doctor = (licence, role) => ({ licence_number: licence, raw: licence, role });
const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;

/** A complete referral event from `issuer` to `receiving`, issued today in Vietnam time. */
function referral(issuer, receiving, slipNumber) {
  const now = new Date(Math.floor(Date.now() / 60000) * 60000);
  const admitted = new Date(now.getTime() - 30 * HOUR);
  const discharged = new Date(now.getTime() - 2 * HOUR);
  const patient = {
    citizen_id: "079085123456",
    id_kind: "PERSON_ID_KIND_CITIZEN_ID",
    full_name: "Nguyễn Văn An",
    birth_date: { value: "19850314", precision: "DATE_PRECISION_DAY" },
    sex: "SEX_MALE",
    ethnicity_code: "01",
    nationality_code: "000",
    address: "Số 12 đường Lê Lợi, phường Bến Thành",
    residence_province_code: "79",
    insurance_cards: [
      {
        number: "DN4790123456789",
        valid_from: day(new Date(now.getTime() - 300 * DAY)),
        valid_to: day(new Date(now.getTime() + 60 * DAY)),
        registered_facility_code: issuer,
      },
    ],
  };
  const slip = {
    episode_id: `${issuer}.0000012345`,
    record_number: "HS000123",
    book_number: "0042",
    slip_number: slipNumber,
    issuer: { code: issuer },
    sending: [{ code: issuer }],
    receiving: { code: receiving },
    patient,
    episode: { admitted_at: minute(admitted), discharged_at: minute(discharged) },
    clinical_signs: "Sốt 39°C, ho có đờm, khó thở nhẹ",
    diagnosis: { main_icd10: "J18.9", secondary_icd10: ["I10"], text: "Viêm phổi, tăng huyết áp" },
    course_of_illness: "Vào viện ngày thứ 3 của bệnh, điều trị kháng sinh không đáp ứng",
    test_summary: "X-quang: đám mờ đáy phổi phải; CRP 85 mg/L",
    treatment: "Ceftriaxone 2g/ngày",
    discharge_type: "DISCHARGE_TYPE_TRANSFERRED_PROFESSIONAL",
    reason: "REFERRAL_REASON_BEYOND_CAPABILITY",
    planned_treatment: "Chuyển tuyến trên điều trị tiếp",
    transport: "Xe cứu thương",
    physician: doctor("012345/HCM-CCHN", "PRACTITIONER_ROLE_PHYSICIAN"),
    head_of_facility: doctor("067890/HCM-CCHN", "PRACTITIONER_ROLE_HEAD_OF_FACILITY"),
    valid_until: day(new Date(discharged.getTime() + 14 * DAY)),
    signature: Buffer.from("<Signature>example</Signature>"),
    layout: "XML_LAYOUT_QD3176",
    issued_at: day(discharged),
  };
  const documentId = referralDocumentId(issuer, slipNumber);
  const header = {
    event_id: eventId("referral", documentId, 1),
    document_id: documentId,
    document_version: 1,
    action: "ACTION_CREATED",
    source_facility_code: issuer,
    source_system: "example-his-node",
    source_system_version: "0.1.0",
    occurred_at: { seconds: String(Math.floor(discharged.getTime() / 1000)), nanos: 0 },
  };
  return { header, slip };
}

function env(name) {
  const value = (process.env[name] ?? "").trim();
  if (!value) {
    console.error(`${name} is not set (source .state/env on the local stack)`);
    process.exit(1);
  }
  return value;
}

async function main() {
  console.log(`ids: ${checkVectors()} test vectors match`);
  const definition = protoLoader.loadSync("lienthong/v1/ingest.proto", {
    includeDirs: [PROTO],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: false,
    oneofs: true,
  });
  const IngestService = grpc.loadPackageDefinition(definition).lienthong.v1.IngestService;

  const target = env("LIENTHONG_GATEWAY_URL").replace(/^https:\/\//, "");
  const token = readFileSync(env("LIENTHONG_GATEWAY_TOKEN_FILE"), "utf8").trim();
  const facility = tokenFacility(token);
  const bearer = grpc.credentials.createFromMetadataGenerator((_, callback) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    callback(null, metadata);
  });
  const credentials = grpc.credentials.combineChannelCredentials(
    grpc.credentials.createSsl(readFileSync(env("LIENTHONG_GATEWAY_CA"))),
    bearer,
  );
  const client = new IngestService(target, credentials);
  const publish = (event) =>
    new Promise((resolve, reject) => {
      const request = { events: [{ referral: event }], request_id: randomUUID() };
      client.Publish(request, { deadline: Date.now() + 30_000 }, (error, response) =>
        error ? reject(error) : resolve(response.results[0]),
      );
    });

  const receiving = facility.slice(0, 2) + (facility.endsWith("001") ? "002" : "001");
  const slipNumber = `CT${randomInt(100_000, 1_000_000)}.P`;
  let status = 0;
  try {
    const valid = referral(facility, receiving, slipNumber);
    let result = await publish(valid);
    console.log(
      `valid slip ${valid.header.event_id}: ${result.outcome} ${result.topic} partition ${result.partition} offset ${result.offset}`,
    );
    if (result.outcome !== "OUTCOME_ACCEPTED") {
      for (const v of result.errors ?? []) console.log(`  ${v.code} at ${v.path}: ${v.message}`);
      console.log(`  ${result.message}`);
      status = 1;
    }

    // Another slip with a citizen ID of the wrong length and no receiving facility.
    const invalid = referral(facility, receiving, `${slipNumber}X`);
    invalid.slip.patient.citizen_id = "07908512";
    delete invalid.slip.receiving;
    result = await publish(invalid);
    console.log(`invalid slip ${invalid.header.event_id}: ${result.outcome}`);
    for (const v of result.errors ?? []) console.log(`  ${v.code} at ${v.path}: ${v.message_vi}`);
    if (result.outcome !== "OUTCOME_REJECTED" || !(result.errors ?? []).length) status = 1;
  } catch (error) {
    console.error(`the gateway answered ${grpc.status[error.code] ?? error.code}: ${error.details}`);
    status = 1;
  } finally {
    client.close();
  }
  return status;
}

process.exitCode = await main();
