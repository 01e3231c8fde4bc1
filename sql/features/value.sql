-- Value features: recency, frequency, monetary, windowed spend, spend trend.
-- Grain: one row per customer in population.
-- Cutoff: only transactions with ts < $as_of; "last N days" = [as_of - N days, as_of).
-- A purchase is a transaction with amount > 0; refunds (amount < 0) reduce spend.
-- Money is summed as DECIMAL(18, 4), so totals are exact and do not depend
--   on the order rows arrive in (a re-run gives identical values).
-- Registry (name, type, description; checked against the output by a test):
-- feature: recency_days Int64: whole days since the last purchase (amount > 0); NULL if none
-- feature: frequency Int64: purchases before the cutoff, all history; 0 if none
-- feature: monetary_sum Float64: net spend (purchases minus refunds), all history; 0 if none
-- feature: monetary_avg Float64: mean purchase amount (refunds excluded); NULL if no purchase
-- feature: purchases_30d Int64: purchases in the last 30 days; 0 if none
-- feature: purchases_90d Int64: purchases in the last 90 days; 0 if none
-- feature: purchases_365d Int64: purchases in the last 365 days; 0 if none
-- feature: spend_30d Float64: net spend in the last 30 days; 0 if none
-- feature: spend_90d Float64: net spend in the last 90 days; 0 if none
-- feature: spend_365d Float64: net spend in the last 365 days; 0 if none
-- feature: spend_prev_90d Float64: net spend in the 90 days before the last 90 (`[cutoff-180d, cutoff-90d)`); 0 if none
-- feature: refunds_365d Int64: refunds (transactions with amount < 0), last 365 days; 0 if none
-- feature: refund_amount_365d Float64: total refunded, as a positive amount, last 365 days; 0 if none
-- feature: interpurchase_days_mean Float64: mean days between consecutive purchases, all history: (last - first) / (purchases - 1); NULL with fewer than 2
-- feature: interpurchase_days_cv Float64: standard deviation / mean of the gaps between consecutive purchases in the last 730 days (0 = perfectly regular; values under 1e-6 are 0); NULL with fewer than 3 such purchases or all at one instant
-- feature: recency_vs_usual_gap Float64: recency_days / interpurchase_days_mean: above 1, the customer is later than usual; NULL when either is
-- feature: spend_trend_90d Float64: `(spend_90d - spend_prev_90d) / (abs(spend_90d) + abs(spend_prev_90d))`, in [-1, 1]; 0 when both are 0
WITH tx AS (
  SELECT customer_no, ts, amount,
         CAST(amount AS DECIMAL(18, 4)) AS money,
         (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS age_days
  FROM transactions_resolved
  WHERE ts < $as_of
),
agg AS (
  SELECT customer_no,
         max(CASE WHEN amount > 0 THEN ts END) AS last_purchase,
         min(CASE WHEN amount > 0 THEN ts END) AS first_purchase,
         sum(CASE WHEN amount > 0 THEN 1 ELSE 0 END) AS frequency,
         sum(money) AS monetary_sum,
         sum(CASE WHEN amount > 0 THEN money END) AS purchases_sum,
         sum(CASE WHEN amount > 0 AND age_days <= 30 THEN 1 ELSE 0 END) AS purchases_30d,
         sum(CASE WHEN amount > 0 AND age_days <= 90 THEN 1 ELSE 0 END) AS purchases_90d,
         sum(CASE WHEN amount > 0 AND age_days <= 365 THEN 1 ELSE 0 END) AS purchases_365d,
         sum(CASE WHEN age_days <= 30 THEN money ELSE 0 END) AS spend_30d,
         sum(CASE WHEN age_days <= 90 THEN money ELSE 0 END) AS spend_90d,
         sum(CASE WHEN age_days <= 365 THEN money ELSE 0 END) AS spend_365d,
         sum(CASE WHEN age_days > 90 AND age_days <= 180 THEN money ELSE 0 END) AS spend_prev_90d,
         sum(CASE WHEN amount < 0 AND age_days <= 365 THEN 1 ELSE 0 END) AS refunds_365d,
         sum(CASE WHEN amount < 0 AND age_days <= 365 THEN -money ELSE 0 END) AS refund_amount_365d
  FROM tx
  GROUP BY customer_no
),
-- The gaps between consecutive purchases of the last 730 days, from each
--   customer's purchase days collected and sorted (DataFusion's window
--   operator, a lag over every purchase, cost more than the rest of this
--   file). With k gaps g: mean(g) = (last - first) / k, and sum(g^2) is the
--   squared distance between the days without the first and without the
--   last, so var(g) = sum(g^2) / k - mean(g)^2. That difference carries
--   rounding of the order of 1e-14 of mean(g)^2: below 1e-12 of it (a
--   coefficient of variation under 1e-6) the gaps count as equal.
purchase_days AS (
  SELECT customer_no, array_sort(array_agg(date_part('epoch', ts) / 86400.0)) AS days
  FROM tx
  WHERE amount > 0 AND age_days <= 730
  GROUP BY customer_no
),
gaps AS (
  SELECT customer_no, days, CAST(cardinality(days) AS BIGINT) - 1 AS k
  FROM purchase_days
),
moments AS (
  SELECT customer_no,
         (days[k + 1] - days[1]) / k AS gap_mean,
         pow(array_distance(array_slice(days, 2, k + 1), array_slice(days, 1, k)), 2) / k AS gap_sq_mean
  FROM gaps
  WHERE k >= 2
),
regularity AS (
  SELECT customer_no, gap_mean,
         CASE WHEN gap_sq_mean - gap_mean * gap_mean > 1e-12 * gap_mean * gap_mean
              THEN gap_sq_mean - gap_mean * gap_mean ELSE 0.0 END AS gap_var
  FROM moments
)
SELECT p.customer_id,
       CAST(floor((date_part('epoch', $as_of) - date_part('epoch', a.last_purchase)) / 86400) AS BIGINT) AS recency_days,
       coalesce(a.frequency, 0) AS frequency,
       coalesce(CAST(a.monetary_sum AS DOUBLE), 0.0) AS monetary_sum,
       CAST(a.purchases_sum AS DOUBLE) / nullif(a.frequency, 0) AS monetary_avg,
       coalesce(a.purchases_30d, 0) AS purchases_30d,
       coalesce(a.purchases_90d, 0) AS purchases_90d,
       coalesce(a.purchases_365d, 0) AS purchases_365d,
       coalesce(CAST(a.spend_30d AS DOUBLE), 0.0) AS spend_30d,
       coalesce(CAST(a.spend_90d AS DOUBLE), 0.0) AS spend_90d,
       coalesce(CAST(a.spend_365d AS DOUBLE), 0.0) AS spend_365d,
       coalesce(CAST(a.spend_prev_90d AS DOUBLE), 0.0) AS spend_prev_90d,
       coalesce(a.refunds_365d, 0) AS refunds_365d,
       coalesce(CAST(a.refund_amount_365d AS DOUBLE), 0.0) AS refund_amount_365d,
       (date_part('epoch', a.last_purchase) - date_part('epoch', a.first_purchase)) / 86400.0
         / nullif(a.frequency - 1, 0) AS interpurchase_days_mean,
       sqrt(r.gap_var) / nullif(r.gap_mean, 0) AS interpurchase_days_cv,
       ((date_part('epoch', $as_of) - date_part('epoch', a.last_purchase)) / 86400.0)
         / nullif((date_part('epoch', a.last_purchase) - date_part('epoch', a.first_purchase)) / 86400.0
                  / nullif(a.frequency - 1, 0), 0) AS recency_vs_usual_gap,
       coalesce(CAST(a.spend_90d - a.spend_prev_90d AS DOUBLE) / nullif(CAST(abs(a.spend_90d) + abs(a.spend_prev_90d) AS DOUBLE), 0), 0.0) AS spend_trend_90d
FROM population p
LEFT JOIN agg a ON a.customer_no = p.customer_no
LEFT JOIN regularity r ON r.customer_no = p.customer_no
