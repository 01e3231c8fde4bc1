-- Profile features.
-- Grain: one row per customer in population. Unknown consent counts as no consent.
-- Registry (name, type, description; checked against the output by a test):
-- feature: tenure_days Int64: whole days from `signup_date` to the cutoff date; NULL if the signup date is unknown
-- feature: consent_email Int64: 1 if email consent is true, else 0 (unknown = 0)
-- feature: consent_sms Int64: 1 if SMS consent is true, else 0 (unknown = 0)
SELECT customer_id,
       CAST(floor((date_part('epoch', CAST($as_of AS DATE)) - date_part('epoch', signup_date)) / 86400) AS BIGINT) AS tenure_days,
       CASE WHEN consent_email THEN 1 ELSE 0 END AS consent_email,
       CASE WHEN consent_sms THEN 1 ELSE 0 END AS consent_sms
FROM population
