-- Transactions attributed to a resolved customer.
-- Grain: one row per transaction whose identifiers are in identity_map (all
--   of them when identities were resolved from all rows; rows after an
--   identity cutoff may carry identifiers not yet known).
-- Every non-shared identifier of a row belongs to the same resolved customer
-- (the identity graph linked them); a row carrying only shared identifiers
-- goes to the shared identifier's own key, so it stays attributable without
-- merging people. customer_key is the CRM customer_id where there is one.
WITH t AS (
  SELECT transaction_id, ts, amount, channel,
         norm_id(customer_id) AS cid, norm_email(email) AS email, norm_id(loyalty_id) AS loyalty_id
  FROM transactions
)
SELECT * FROM (
  SELECT t.transaction_id, t.ts, t.amount, t.channel,
         coalesce(CASE WHEN NOT c.shared THEN c.customer_key END,
                  CASE WHEN NOT e.shared THEN e.customer_key END,
                  CASE WHEN NOT l.shared THEN l.customer_key END,
                  c.customer_key, e.customer_key, l.customer_key) AS customer_key
  FROM t
  LEFT JOIN identity_map c ON c.identifier_type = 'customer_id' AND c.identifier_value = t.cid
  LEFT JOIN identity_map e ON e.identifier_type = 'email' AND e.identifier_value = t.email
  LEFT JOIN identity_map l ON l.identifier_type = 'loyalty_id' AND l.identifier_value = t.loyalty_id
) resolved
WHERE customer_key IS NOT NULL
