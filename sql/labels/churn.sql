-- Churn label for training.
-- Grain: one row per CRM customer with a purchase in [as_of - 365 days, as_of)
--   (anonymous and shared-identifier keys are not customers).
-- churned = true when the customer has no purchase in [as_of, as_of + $horizon_days days).
-- Only this file reads events at or after the cutoff; features never do.
WITH tx AS (
  SELECT customer_no,
         (date_part('epoch', ts) - date_part('epoch', $as_of)) / 86400.0 AS day
  FROM transactions_resolved
  WHERE amount > 0
),
label AS (
  SELECT customer_no,
         sum(CASE WHEN day >= 0 AND day < $horizon_days THEN 1 ELSE 0 END) = 0 AS churned
  FROM tx
  GROUP BY customer_no
  HAVING sum(CASE WHEN day >= -365 AND day < 0 THEN 1 ELSE 0 END) > 0
)
SELECT k.customer_key AS customer_id, l.churned
FROM label l
JOIN customer_keys k ON k.customer_no = l.customer_no AND k.crm
ORDER BY customer_id
