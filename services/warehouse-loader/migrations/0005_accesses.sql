-- The access table: every access decision of the regional stores' query API (the audit topic),
-- so a patient can be told who accessed their record, when, why and with what decision.
-- Patients appear only by pseudonymous key; no document id (no slip number) is kept. In the restricted schema: analysts never read it;
-- the loader grants SELECT on this table alone to the privacy officers' role.

CREATE TABLE restricted.accesses (
    audit_id            text PRIMARY KEY,
    at                  timestamptz NOT NULL,
    caller_facility     text NOT NULL,
    caller_individual   text NOT NULL,
    auth_method         text NOT NULL,
    method              text NOT NULL,
    purpose             text NOT NULL,
    decision            text NOT NULL CHECK (decision IN ('allowed', 'refused', 'break-glass')),
    reason              text NOT NULL,
    patient_keys        text[] NOT NULL,
    results             integer NOT NULL,
    request_id          text NOT NULL,
    client_address      text NOT NULL,
    subject_facility    text NOT NULL,
    loaded_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accesses_by_patient ON restricted.accesses USING gin (patient_keys);
CREATE INDEX accesses_by_time ON restricted.accesses (at);
