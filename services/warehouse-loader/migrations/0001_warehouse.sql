-- lienthong national warehouse, version 1.
-- Pseudonymized by construction: no citizen ID, name, address, card number or phone is ever
-- written. Patients appear as patient_key (keyed HMAC), an age band at the event, sex and the
-- region (2025 province code) of residence.

CREATE TABLE provinces (
    code        text PRIMARY KEY,          -- current (2025) province-level unit
    name        text NOT NULL
);

CREATE TABLE province_codes (
    old_code    text PRIMARY KEY,          -- 2004 code (QĐ 124/2004/QĐ-TTg), used in facility codes
    old_name    text NOT NULL,
    region      text NOT NULL REFERENCES provinces (code)
);

-- Every event, once (insert-if-absent by event_id).
CREATE TABLE event_history (
    event_id            text PRIMARY KEY,
    kind                text NOT NULL,
    document_id         text NOT NULL,
    document_version    bigint NOT NULL,
    action              text NOT NULL,
    occurred_at         timestamptz,
    recorded_at         timestamptz,
    source_facility     text NOT NULL,
    source_region       text,
    patient_key         text NOT NULL,
    patient_key_id      text NOT NULL,
    age_band            text,
    sex                 text,
    residence_region    text,
    kafka_topic         text NOT NULL,
    kafka_partition     integer NOT NULL,
    kafka_offset        bigint NOT NULL,
    loaded_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_history_document ON event_history (document_id, document_version);
CREATE INDEX event_history_occurred ON event_history (occurred_at);
CREATE INDEX event_history_patient ON event_history (patient_key);

-- Current state: the highest version of each document.
CREATE TABLE referrals (
    document_id         text PRIMARY KEY,
    document_version    bigint NOT NULL,
    event_id            text NOT NULL,
    cancelled           boolean NOT NULL,
    patient_key         text NOT NULL,
    age_band            text,
    sex                 text,
    residence_region    text,
    issuer_facility     text NOT NULL,
    issuer_region       text,
    receiving_facility  text,
    receiving_region    text,
    reason              text,
    discharge_type      text,
    main_icd10          text,
    secondary_icd10     text[] NOT NULL DEFAULT '{}',
    issued_on           date,
    valid_until         date,
    chronic_validity    boolean NOT NULL DEFAULT false,
    admitted_at         timestamptz,
    discharged_at       timestamptz,
    occurred_at         timestamptz
);
CREATE INDEX referrals_issuer_month ON referrals (issuer_region, issued_on);
CREATE INDEX referrals_receiving ON referrals (receiving_facility, issued_on);
CREATE INDEX referrals_patient ON referrals (patient_key);

CREATE TABLE appointments (
    document_id         text PRIMARY KEY,
    document_version    bigint NOT NULL,
    event_id            text NOT NULL,
    cancelled           boolean NOT NULL,
    patient_key         text NOT NULL,
    age_band            text,
    sex                 text,
    residence_region    text,
    facility            text NOT NULL,
    facility_region     text,
    appointment_at      timestamptz,
    issued_on           date,
    main_icd10          text,
    occurred_at         timestamptz
);
CREATE INDEX appointments_facility_date ON appointments (facility, appointment_at);

CREATE TABLE lab_reports (
    document_id         text PRIMARY KEY,
    document_version    bigint NOT NULL,
    event_id            text NOT NULL,
    cancelled           boolean NOT NULL,
    patient_key         text NOT NULL,
    age_band            text,
    sex                 text,
    residence_region    text,
    facility            text NOT NULL,
    facility_region     text,
    service_code        text NOT NULL,
    first_result_at     timestamptz,
    line_count          integer NOT NULL,
    occurred_at         timestamptz
);
CREATE INDEX lab_reports_patient_service ON lab_reports (patient_key, service_code, first_result_at);
CREATE INDEX lab_reports_service_month ON lab_reports (service_code, first_result_at);

CREATE TABLE lab_result_lines (
    document_id         text NOT NULL REFERENCES lab_reports (document_id) ON DELETE CASCADE,
    line_number         integer NOT NULL,
    indicator_code      text,
    indicator_name      text,
    value_numeric       double precision,
    value_text          text,
    unit                text,
    result_at           timestamptz,
    loinc_code          text,
    PRIMARY KEY (document_id, line_number)
);

-- Consumed positions, written in the same transaction as the rows (exactly-once effect).
CREATE TABLE loader_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);

-- Analytics views (documented in README).
CREATE VIEW v_referrals_by_province_month_reason AS
    SELECT issuer_region AS province, date_trunc('month', issued_on)::date AS month, reason,
           count(*) AS referrals
    FROM referrals WHERE NOT cancelled
    GROUP BY 1, 2, 3;

CREATE VIEW v_appointments_per_facility_month AS
    SELECT facility, facility_region AS province, date_trunc('month', appointment_at)::date AS month,
           count(*) AS appointments
    FROM appointments WHERE NOT cancelled
    GROUP BY 1, 2, 3;

CREATE VIEW v_lab_tests_per_service_month AS
    SELECT service_code, date_trunc('month', first_result_at)::date AS month, count(*) AS reports,
           sum(line_count) AS result_lines
    FROM lab_reports WHERE NOT cancelled
    GROUP BY 1, 2;

-- Same patient, same service, at another facility within 90 days: a test that could have been
-- reused (Health Insurance Law 51/2024/QH15 requires reuse between insured facilities).
CREATE VIEW v_lab_reuse_candidates AS
    SELECT later.document_id AS repeated_report, earlier.document_id AS earlier_report,
           later.service_code, later.patient_key,
           earlier.facility AS earlier_facility, later.facility AS later_facility,
           later.first_result_at - earlier.first_result_at AS interval_between
    FROM lab_reports later
    JOIN lab_reports earlier
      ON earlier.patient_key = later.patient_key
     AND earlier.service_code = later.service_code
     AND earlier.document_id <> later.document_id
     AND earlier.first_result_at < later.first_result_at
     AND later.first_result_at - earlier.first_result_at <= interval '90 days'
     AND earlier.facility <> later.facility
    WHERE NOT later.cancelled AND NOT earlier.cancelled;
