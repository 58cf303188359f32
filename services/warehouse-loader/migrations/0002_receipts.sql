-- Receipts of referred patients (AcknowledgeReferral in the regional stores) and the
-- completion view: how many referrals were received, and how long after issue.

CREATE TABLE referral_receipts (
    referral_document_id    text PRIMARY KEY,
    event_id                text NOT NULL,
    received_by_facility    text NOT NULL,
    received_by_region      text,
    received_at             timestamptz
);

CREATE VIEW v_referral_completion AS
    SELECT r.issuer_region AS province,
           date_trunc('month', r.issued_on)::date AS month,
           count(*) AS referrals,
           count(rc.referral_document_id) AS received,
           round(count(rc.referral_document_id)::numeric / nullif(count(*), 0), 3) AS completion_rate,
           avg(rc.received_at - r.issued_on::timestamptz) AS mean_delay
    FROM referrals r
    LEFT JOIN referral_receipts rc ON rc.referral_document_id = r.document_id
    WHERE NOT r.cancelled
    GROUP BY 1, 2;
