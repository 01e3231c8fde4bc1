-- The distinct sets of identifiers seen together on one input row.
-- Grain: one row per distinct (from_crm, customer_id, email, phone,
--   loyalty_id, cookie_id), every identifier normalised (norm_* functions,
--   see pipeline/src/identity.rs); a row with no usable identifier is dropped.
-- from_crm is true for rows of the customers table: their customer_id is a
--   CRM customer. The identity graph links every identifier of a set.
-- Cutoff: only events with ts < $as_of (identity as known before the cutoff;
--   the engine binds 2200-01-01 for "all rows").
WITH raw AS (
  SELECT true AS from_crm, customer_id, email, phone, loyalty_id, CAST(NULL AS VARCHAR) AS cookie_id
  FROM customers
  UNION ALL
  SELECT false, customer_id, email, CAST(NULL AS VARCHAR), loyalty_id, CAST(NULL AS VARCHAR)
  FROM transactions
  WHERE ts < $as_of
  UNION ALL
  SELECT false, customer_id, email, phone, loyalty_id, cookie_id
  FROM interactions
  WHERE ts < $as_of
),
norm AS (
  SELECT DISTINCT from_crm,
         norm_id(customer_id) AS customer_id,
         norm_email(email) AS email,
         norm_phone(phone) AS phone,
         norm_id(loyalty_id) AS loyalty_id,
         norm_id(cookie_id) AS cookie_id
  FROM raw
)
SELECT * FROM norm
WHERE customer_id IS NOT NULL OR email IS NOT NULL OR phone IS NOT NULL
   OR loyalty_id IS NOT NULL OR cookie_id IS NOT NULL
