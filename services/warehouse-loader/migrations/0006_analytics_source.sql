-- The warehouse loads the de-identified analytics topics (lienthong.analytics.*) alone. Rows
-- loaded from the document topics carried facility document ids (slip numbers, HIS episode
-- keys), operational patient pseudonyms and exact times: they are removed here with the
-- positions that loaded them, and the warehouse fills again from the analytics topics.
TRUNCATE event_history, referrals, appointments, lab_result_lines, lab_reports, referral_receipts;
DELETE FROM loader_offsets
 WHERE topic NOT LIKE 'lienthong.analytics.%' AND topic <> 'lienthong.audit.v1';

-- No free text reaches the analytics topics: indicator names and result values as text are
-- dropped by the de-identification policy, and the referral narrative with them.
DROP TABLE restricted.referral_notes;
ALTER TABLE lab_result_lines DROP COLUMN indicator_name, DROP COLUMN value_text;

-- Day precision: occurred_at, recorded_at, admitted_at, discharged_at, appointment_at,
-- first_result_at, result_at and received_at hold the start of a Vietnam day (or of a month
-- or year when the source knew no more).
COMMENT ON COLUMN event_history.occurred_at IS 'start of the Vietnam day (UTC+7) it happened';
