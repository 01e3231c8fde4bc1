-- The customers that exist as of the cutoff.
-- Grain: one row per customer whose signup_date is before $as_of, or unknown.
-- Cutoff: a customer signing up on or after the cutoff date is not yet a customer.
-- customer_no: the number of the customer's key (customer_keys), which the
--   attributed events carry; NULL for a customer merged into another one
--   (their events carry the other's key) and for one the identity graph
--   never saw.
SELECT c.customer_id, k.customer_no, c.signup_date, c.consent_email, c.consent_sms, c.consent_call
FROM customers c
LEFT JOIN customer_keys k ON k.customer_key = c.customer_id AND k.crm
WHERE c.signup_date IS NULL OR c.signup_date < CAST($as_of AS DATE)
