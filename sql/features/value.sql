-- Value features: recency, frequency, monetary, windowed spend, spend trend.
-- Grain: one row per customer in population.
-- Cutoff: only transactions with ts < $as_of; "last N days" = [as_of - N days, as_of).
-- A purchase is a transaction with amount > 0; refunds (amount < 0) reduce spend.
-- Nulls: counts and sums are 0 without purchases; recency_days and
--   monetary_avg are NULL for a customer who never purchased.
--   spend_trend_90d = (spend_90d - spend_prev_90d) / (|spend_90d| + |spend_prev_90d|),
--   in [-1, 1]; 0 when both are 0.
WITH tx AS (
  SELECT customer_key AS customer_id, ts, amount,
         (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS age_days
  FROM transactions_resolved
  WHERE ts < $as_of
),
agg AS (
  SELECT customer_id,
         max(CASE WHEN amount > 0 THEN ts END) AS last_purchase,
         sum(CASE WHEN amount > 0 THEN 1 ELSE 0 END) AS frequency,
         sum(amount) AS monetary_sum,
         avg(CASE WHEN amount > 0 THEN amount END) AS monetary_avg,
         sum(CASE WHEN amount > 0 AND age_days <= 30 THEN 1 ELSE 0 END) AS purchases_30d,
         sum(CASE WHEN amount > 0 AND age_days <= 90 THEN 1 ELSE 0 END) AS purchases_90d,
         sum(CASE WHEN amount > 0 AND age_days <= 365 THEN 1 ELSE 0 END) AS purchases_365d,
         sum(CASE WHEN age_days <= 30 THEN amount ELSE 0 END) AS spend_30d,
         sum(CASE WHEN age_days <= 90 THEN amount ELSE 0 END) AS spend_90d,
         sum(CASE WHEN age_days <= 365 THEN amount ELSE 0 END) AS spend_365d,
         sum(CASE WHEN age_days > 90 AND age_days <= 180 THEN amount ELSE 0 END) AS spend_prev_90d
  FROM tx
  GROUP BY customer_id
)
SELECT p.customer_id,
       CAST(floor((date_part('epoch', $as_of) - date_part('epoch', a.last_purchase)) / 86400) AS BIGINT) AS recency_days,
       coalesce(a.frequency, 0) AS frequency,
       coalesce(a.monetary_sum, 0.0) AS monetary_sum,
       a.monetary_avg,
       coalesce(a.purchases_30d, 0) AS purchases_30d,
       coalesce(a.purchases_90d, 0) AS purchases_90d,
       coalesce(a.purchases_365d, 0) AS purchases_365d,
       coalesce(a.spend_30d, 0.0) AS spend_30d,
       coalesce(a.spend_90d, 0.0) AS spend_90d,
       coalesce(a.spend_365d, 0.0) AS spend_365d,
       coalesce(a.spend_prev_90d, 0.0) AS spend_prev_90d,
       coalesce((a.spend_90d - a.spend_prev_90d) / nullif(abs(a.spend_90d) + abs(a.spend_prev_90d), 0), 0.0) AS spend_trend_90d
FROM population p
LEFT JOIN agg a ON a.customer_id = p.customer_id
