-- Future spend label.
-- Grain: one row per CRM customer (the feature table's population is a subset).
-- future_spend = net spend (purchases minus refunds), summed exactly, in
--   [as_of, as_of + $horizon_days days); 0 when none.
-- Only label files read events at or after the cutoff; features never do.
WITH tx AS (
  SELECT customer_no, CAST(amount AS DECIMAL(18, 4)) AS money,
         (date_part('epoch', ts) - date_part('epoch', $as_of)) / 86400.0 AS day
  FROM transactions_resolved
),
spend AS (
  SELECT customer_no, sum(money) AS total
  FROM tx
  WHERE day >= 0 AND day < $horizon_days
  GROUP BY customer_no
)
SELECT c.customer_id, coalesce(CAST(s.total AS DOUBLE), 0.0) AS future_spend
FROM customers c
LEFT JOIN customer_keys k ON k.customer_key = c.customer_id AND k.crm
LEFT JOIN spend s ON s.customer_no = k.customer_no
ORDER BY c.customer_id
