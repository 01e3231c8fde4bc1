-- Lifecycle stage: where each customer is in their relationship as of the cutoff.
-- Grain: one row per customer in population.
-- Cutoff: only purchases (amount > 0) with ts < $as_of.
-- Rules, first match wins; the day limits are parameters (defaults in
--   docs/features.md, flags --lifecycle-*-days):
--   prospect     never purchased
--   new          first purchase within $new_days
--   reactivated  last purchase within $active_days, after a gap of more than
--                $dormant_days since the purchase before it (had churned, came back)
--   active       last purchase within $active_days
--   at_risk      last purchase within $at_risk_days
--   dormant      last purchase within $dormant_days
--   churned      last purchase longer ago
-- "within N days" = at most N days before the cutoff.
-- Registry (name, type, description; checked against the output by a test):
-- feature: lifecycle_stage Utf8{prospect,new,active,at_risk,dormant,churned,reactivated}: stage by the rules in sql/features/lifecycle.sql; models see it one-hot
WITH tx AS (
  SELECT customer_key AS customer_id, ts
  FROM transactions_resolved
  WHERE ts < $as_of AND amount > 0
),
span AS (
  SELECT customer_id, min(ts) AS first_purchase, max(ts) AS last_purchase
  FROM tx
  GROUP BY customer_id
),
prev AS (
  SELECT t.customer_id, max(t.ts) AS prev_purchase
  FROM tx t
  JOIN span s ON s.customer_id = t.customer_id
  WHERE t.ts < s.last_purchase
  GROUP BY t.customer_id
),
ages AS (
  SELECT s.customer_id,
         (date_part('epoch', $as_of) - date_part('epoch', s.first_purchase)) / 86400.0 AS first_age,
         (date_part('epoch', $as_of) - date_part('epoch', s.last_purchase)) / 86400.0 AS last_age,
         (date_part('epoch', s.last_purchase) - date_part('epoch', p.prev_purchase)) / 86400.0 AS last_gap
  FROM span s
  LEFT JOIN prev p ON p.customer_id = s.customer_id
)
SELECT p.customer_id,
       CASE
         WHEN a.customer_id IS NULL THEN 'prospect'
         WHEN a.first_age <= $new_days THEN 'new'
         WHEN a.last_age <= $active_days AND a.last_gap > $dormant_days THEN 'reactivated'
         WHEN a.last_age <= $active_days THEN 'active'
         WHEN a.last_age <= $at_risk_days THEN 'at_risk'
         WHEN a.last_age <= $dormant_days THEN 'dormant'
         ELSE 'churned'
       END AS lifecycle_stage
FROM population p
LEFT JOIN ages a ON a.customer_id = p.customer_id
