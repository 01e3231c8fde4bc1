-- Profile features.
-- Grain: one row per customer in population.
-- tenure_days: whole days from signup_date to the cutoff date; NULL when the
--   signup date is unknown.
-- consent_*: 1 when consent is recorded as true, else 0 (unknown = no consent).
SELECT customer_id,
       CAST(floor((date_part('epoch', CAST($as_of AS DATE)) - date_part('epoch', signup_date)) / 86400) AS BIGINT) AS tenure_days,
       CASE WHEN consent_email THEN 1 ELSE 0 END AS consent_email,
       CASE WHEN consent_sms THEN 1 ELSE 0 END AS consent_sms
FROM population
