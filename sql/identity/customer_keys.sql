-- Identifier -> customer lookup built from the customers table (v1 identity).
-- Grain: one row per (id_type, id_value) that belongs to exactly one customer.
-- Normalisation: emails trimmed and lower-cased; phones reduced to their
-- last 10 digits (formatting, spaces and a leading country code removed);
-- loyalty ids trimmed. An identifier shared by several customers is dropped
-- here, so events carrying only that identifier stay unattributed instead of
-- being given to the wrong person.
WITH ids AS (
  SELECT 'email' AS id_type, lower(btrim(email)) AS id_value, customer_id
  FROM customers WHERE email IS NOT NULL
  UNION ALL
  SELECT 'phone', right(regexp_replace(phone, '[^0-9]', '', 'g'), 10), customer_id
  FROM customers WHERE phone IS NOT NULL
  UNION ALL
  SELECT 'loyalty_id', btrim(loyalty_id), customer_id
  FROM customers WHERE loyalty_id IS NOT NULL
)
SELECT id_type, id_value, min(customer_id) AS customer_id
FROM ids
WHERE id_value <> ''
GROUP BY id_type, id_value
HAVING count(DISTINCT customer_id) = 1
