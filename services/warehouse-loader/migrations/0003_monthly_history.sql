-- Monthly partitions for event_history (the table that grows with every event), and a
-- restricted schema for free-text clinical fields, empty unless the loader is started with
-- --free-text (grant it only to the roles allowed to read clinical narrative).

ALTER TABLE event_history RENAME TO event_history_v1;
ALTER INDEX event_history_pkey RENAME TO event_history_v1_pkey;
ALTER INDEX event_history_document RENAME TO event_history_v1_document;
ALTER INDEX event_history_occurred RENAME TO event_history_v1_occurred;
ALTER INDEX event_history_patient RENAME TO event_history_v1_patient;

-- event_month is the month (Vietnam time, UTC+7) of occurred_at (1970-01 when absent): fixed by
-- the event itself, so one event_id always lands in the same partition and the primary key
-- (event_id, event_month) still stores every event once.
CREATE TABLE event_history (
    event_id            text NOT NULL,
    event_month         date NOT NULL,
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
    loaded_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, event_month)
) PARTITION BY RANGE (event_month);
CREATE INDEX event_history_document ON event_history (document_id, document_version);
CREATE INDEX event_history_occurred ON event_history (occurred_at);
CREATE INDEX event_history_patient ON event_history (patient_key);
CREATE INDEX event_history_kind_region ON event_history (kind, source_region, event_month);

-- Creates the partition of a month if it is missing. Loaders call it before a batch that
-- reaches a new month; the advisory lock keeps two replicas from racing on the DDL.
CREATE FUNCTION lienthong_ensure_history_month(m date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    first_day date := date_trunc('month', m)::date;
    part text := format('event_history_%s', to_char(first_day, 'YYYY_MM'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(7154327001);
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF event_history FOR VALUES FROM (%L) TO (%L)',
                   part, first_day, (first_day + interval '1 month')::date);
END $$;

SELECT lienthong_ensure_history_month(m)
FROM (SELECT DISTINCT date_trunc('month', (coalesce(occurred_at, 'epoch') AT TIME ZONE 'UTC') + interval '7 hours')::date AS m
      FROM event_history_v1) months;
INSERT INTO event_history (event_id, event_month, kind, document_id, document_version, action, occurred_at, recorded_at,
                           source_facility, source_region, patient_key, patient_key_id, age_band, sex, residence_region,
                           kafka_topic, kafka_partition, kafka_offset, loaded_at)
SELECT event_id, date_trunc('month', (coalesce(occurred_at, 'epoch') AT TIME ZONE 'UTC') + interval '7 hours')::date,
       kind, document_id, document_version, action, occurred_at, recorded_at, source_facility, source_region, patient_key,
       patient_key_id, age_band, sex, residence_region, kafka_topic, kafka_partition, kafka_offset, loaded_at
FROM event_history_v1;
DROP TABLE event_history_v1;

CREATE SCHEMA restricted;
REVOKE ALL ON SCHEMA restricted FROM PUBLIC;
CREATE TABLE restricted.referral_notes (
    document_id             text PRIMARY KEY,
    document_version        bigint NOT NULL,
    clinical_signs          text,
    diagnosis_text          text,
    course_of_illness       text,
    test_summary            text,
    treatment               text,
    condition_at_transfer   text,
    planned_treatment       text
);
