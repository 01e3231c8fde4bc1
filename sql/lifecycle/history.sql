-- Lifecycle stage history: each customer's stage at every cutoff, with the
-- stage at the cutoff before.
-- Input: lifecycle_stages (customer_id, as_of, lifecycle_stage), the
--   lifecycle_features view (sql/features/lifecycle.sql) computed at each
--   cutoff point in time, stacked.
-- Grain: one row per customer and cutoff at which the customer existed.
-- previous_stage: the stage at the previous cutoff; NULL at the first
--   cutoff and for a customer who had not signed up by the previous one.
SELECT s.customer_id,
       s.as_of,
       s.lifecycle_stage,
       CASE WHEN lag(s.as_of) OVER w = c.previous_as_of
            THEN lag(s.lifecycle_stage) OVER w END AS previous_stage
FROM lifecycle_stages s
JOIN (
  SELECT as_of, lag(as_of) OVER (ORDER BY as_of) AS previous_as_of
  FROM (SELECT DISTINCT as_of FROM lifecycle_stages) d
) c ON c.as_of = s.as_of
WINDOW w AS (PARTITION BY s.customer_id ORDER BY s.as_of)
