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
-- One pass over the purchases, no self-join: the purchase before the last
--   matters only when the last one is within $active_days (reactivated).
--   Then, if every purchase within $active_days is at the last one's
--   instant, the one before it is the latest purchase older than
--   $active_days; if another is within $active_days, the gap is under
--   $active_days <= $dormant_days, so not reactivated (last_gap NULL).
WITH tx AS (
  SELECT customer_no, ts,
         (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS age_days
  FROM transactions_resolved
  WHERE ts < $as_of AND amount > 0
),
span AS (
  SELECT customer_no, min(ts) AS first_purchase, max(ts) AS last_purchase,
         min(CASE WHEN age_days <= $active_days THEN ts END) AS first_recent,
         max(CASE WHEN age_days > $active_days THEN ts END) AS last_before_recent
  FROM tx
  GROUP BY customer_no
),
ages AS (
  SELECT customer_no,
         (date_part('epoch', $as_of) - date_part('epoch', first_purchase)) / 86400.0 AS first_age,
         (date_part('epoch', $as_of) - date_part('epoch', last_purchase)) / 86400.0 AS last_age,
         CASE WHEN first_recent = last_purchase
              THEN (date_part('epoch', last_purchase) - date_part('epoch', last_before_recent)) / 86400.0
         END AS last_gap
  FROM span
)
SELECT p.customer_id,
       CASE
         WHEN a.customer_no IS NULL THEN 'prospect'
         WHEN a.first_age <= $new_days THEN 'new'
         WHEN a.last_age <= $active_days AND a.last_gap > $dormant_days THEN 'reactivated'
         WHEN a.last_age <= $active_days THEN 'active'
         WHEN a.last_age <= $at_risk_days THEN 'at_risk'
         WHEN a.last_age <= $dormant_days THEN 'dormant'
         ELSE 'churned'
       END AS lifecycle_stage
FROM population p
LEFT JOIN ages a ON a.customer_no = p.customer_no
