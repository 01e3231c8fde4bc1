-- The customers that exist as of the cutoff.
-- Grain: one row per customer whose signup_date is before $as_of, or unknown.
-- Cutoff: a customer signing up on or after the cutoff date is not yet a customer.
SELECT customer_id, signup_date, consent_email, consent_sms, consent_call
FROM customers
WHERE signup_date IS NULL OR signup_date < CAST($as_of AS DATE)
