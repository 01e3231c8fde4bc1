-- Interactions attributed to a resolved customer.
-- Grain: one row per interaction whose identifiers are in identity_map. Only
-- the columns feature SQL reads are kept: this view is held in memory.
-- Attribution as in transactions_resolved.sql; a cookie-only event lands on
-- the customer the cookie was linked to (by a visit that also carried an
-- email or id), or on an anonymous key.
WITH i AS (
  SELECT ts, channel, event_type, duration_s,
         norm_id(customer_id) AS cid, norm_email(email) AS email, norm_phone(phone) AS phone,
         norm_id(loyalty_id) AS loyalty_id, norm_id(cookie_id) AS cookie_id
  FROM interactions
)
SELECT * FROM (
  SELECT i.ts, i.channel, i.event_type, i.duration_s,
         coalesce(CASE WHEN NOT c.shared THEN c.customer_key END,
                  CASE WHEN NOT e.shared THEN e.customer_key END,
                  CASE WHEN NOT p.shared THEN p.customer_key END,
                  CASE WHEN NOT l.shared THEN l.customer_key END,
                  CASE WHEN NOT k.shared THEN k.customer_key END,
                  c.customer_key, e.customer_key, p.customer_key, l.customer_key, k.customer_key) AS customer_key
  FROM i
  LEFT JOIN identity_map c ON c.identifier_type = 'customer_id' AND c.identifier_value = i.cid
  LEFT JOIN identity_map e ON e.identifier_type = 'email' AND e.identifier_value = i.email
  LEFT JOIN identity_map p ON p.identifier_type = 'phone' AND p.identifier_value = i.phone
  LEFT JOIN identity_map l ON l.identifier_type = 'loyalty_id' AND l.identifier_value = i.loyalty_id
  LEFT JOIN identity_map k ON k.identifier_type = 'cookie_id' AND k.identifier_value = i.cookie_id
) resolved
WHERE customer_key IS NOT NULL
