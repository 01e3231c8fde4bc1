-- Churn label for training.
-- Grain: one row per CRM customer with a purchase in [as_of - 365 days, as_of)
--   (anonymous and shared-identifier keys are not customers).
-- churned = true when the customer has no purchase in [as_of, as_of + $horizon_days days).
-- Only this file reads events at or after the cutoff; features never do.
WITH tx AS (
  SELECT customer_key AS customer_id,
         (date_part('epoch', ts) - date_part('epoch', $as_of)) / 86400.0 AS day
  FROM transactions_resolved
  WHERE amount > 0 AND customer_key IN (SELECT customer_id FROM customers)
)
SELECT customer_id,
       sum(CASE WHEN day >= 0 AND day < $horizon_days THEN 1 ELSE 0 END) = 0 AS churned
FROM tx
GROUP BY customer_id
HAVING sum(CASE WHEN day >= -365 AND day < 0 THEN 1 ELSE 0 END) > 0
ORDER BY customer_id
