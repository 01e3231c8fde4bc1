-- Interactions attributed to a customer.
-- Grain: one row per interaction that resolves to a known customer. Only the
-- columns feature SQL reads are kept: this view is held in memory.
-- Resolution order: customer_id, email, phone, loyalty_id (normalised as in
-- customer_keys.sql). Cookie-only events cannot be attributed in v1 and are
-- left out (and counted by the job).
SELECT i.ts, i.channel, i.event_type, i.duration_s,
       coalesce(c.customer_id, e.customer_id, p.customer_id, l.customer_id) AS customer_key
FROM interactions i
LEFT JOIN customers c ON c.customer_id = i.customer_id
LEFT JOIN (SELECT id_value, customer_id FROM customer_keys WHERE id_type = 'email') e
  ON e.id_value = lower(btrim(i.email))
LEFT JOIN (SELECT id_value, customer_id FROM customer_keys WHERE id_type = 'phone') p
  ON p.id_value = right(regexp_replace(i.phone, '[^0-9]', '', 'g'), 10)
LEFT JOIN (SELECT id_value, customer_id FROM customer_keys WHERE id_type = 'loyalty_id') l
  ON l.id_value = btrim(i.loyalty_id)
WHERE coalesce(c.customer_id, e.customer_id, p.customer_id, l.customer_id) IS NOT NULL
