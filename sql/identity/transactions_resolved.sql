-- Transactions attributed to a customer.
-- Grain: one row per transaction that resolves to a known customer.
-- Resolution order: customer_id (if it is a known customer), then email,
-- then loyalty_id, each normalised as in customer_keys.sql. Transactions
-- that resolve to nobody are left out (and counted by the job).
SELECT t.transaction_id, t.ts, t.amount, t.channel,
       coalesce(c.customer_id, e.customer_id, l.customer_id) AS customer_key
FROM transactions t
LEFT JOIN customers c ON c.customer_id = t.customer_id
LEFT JOIN (SELECT id_value, customer_id FROM customer_keys WHERE id_type = 'email') e
  ON e.id_value = lower(btrim(t.email))
LEFT JOIN (SELECT id_value, customer_id FROM customer_keys WHERE id_type = 'loyalty_id') l
  ON l.id_value = btrim(t.loyalty_id)
WHERE coalesce(c.customer_id, e.customer_id, l.customer_id) IS NOT NULL
