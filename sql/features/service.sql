-- Service features: call-center contacts and complaints.
-- Grain: one row per customer in population.
-- Cutoff: only interactions with ts < $as_of; "last 90 days" = [as_of - 90 days, as_of).
-- Nulls: counts are 0 for customers without calls or complaints.
-- Registry (name, type, description; checked against the output by a test):
-- feature: calls_90d Int64: call-center calls (inbound + outbound), last 90 days; 0 if none
-- feature: complaints_90d Int64: complaints, last 90 days; 0 if none
WITH ev AS (
  SELECT customer_key AS customer_id, event_type,
         (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS age_days
  FROM interactions_resolved
  WHERE ts < $as_of
    AND event_type IN ('call_inbound', 'call_outbound', 'complaint')
),
agg AS (
  SELECT customer_id,
         sum(CASE WHEN event_type IN ('call_inbound', 'call_outbound') AND age_days <= 90 THEN 1 ELSE 0 END) AS calls_90d,
         sum(CASE WHEN event_type = 'complaint' AND age_days <= 90 THEN 1 ELSE 0 END) AS complaints_90d
  FROM ev
  GROUP BY customer_id
)
SELECT p.customer_id,
       coalesce(a.calls_90d, 0) AS calls_90d,
       coalesce(a.complaints_90d, 0) AS complaints_90d
FROM population p
LEFT JOIN agg a ON a.customer_id = p.customer_id
