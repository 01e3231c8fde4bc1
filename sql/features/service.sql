-- Service features: call-center contacts and complaints.
-- Grain: one row per customer in population.
-- Cutoff: only interactions with ts < $as_of; "last 90 days" = [as_of - 90 days, as_of).
-- Call minutes are the duration_s of every call-center interaction (a
--   complaint made by phone is a call too), unknown durations count 0.
-- Registry (name, type, description; checked against the output by a test):
-- feature: calls_inbound_90d Int64: inbound calls, last 90 days; 0 if none
-- feature: calls_outbound_90d Int64: outbound calls (the business called), last 90 days; 0 if none
-- feature: call_minutes_90d Float64: minutes of call-center interactions, last 90 days; 0 if none
-- feature: complaints_90d Int64: complaints, last 90 days; 0 if none
-- feature: days_since_last_complaint Int64: whole days since the last complaint; NULL if never
WITH ev AS (
  SELECT customer_no, ts, channel, event_type, duration_s,
         (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS age_days
  FROM interactions_resolved
  WHERE ts < $as_of
    AND (channel = 'call_center' OR event_type IN ('call_inbound', 'call_outbound', 'complaint'))
),
agg AS (
  SELECT customer_no,
         sum(CASE WHEN event_type = 'call_inbound' AND age_days <= 90 THEN 1 ELSE 0 END) AS calls_inbound_90d,
         sum(CASE WHEN event_type = 'call_outbound' AND age_days <= 90 THEN 1 ELSE 0 END) AS calls_outbound_90d,
         sum(CASE WHEN channel = 'call_center' AND age_days <= 90 THEN coalesce(duration_s, 0) ELSE 0 END) / 60.0 AS call_minutes_90d,
         sum(CASE WHEN event_type = 'complaint' AND age_days <= 90 THEN 1 ELSE 0 END) AS complaints_90d,
         max(CASE WHEN event_type = 'complaint' THEN ts END) AS last_complaint
  FROM ev
  GROUP BY customer_no
)
SELECT p.customer_id,
       coalesce(a.calls_inbound_90d, 0) AS calls_inbound_90d,
       coalesce(a.calls_outbound_90d, 0) AS calls_outbound_90d,
       coalesce(a.call_minutes_90d, 0.0) AS call_minutes_90d,
       coalesce(a.complaints_90d, 0) AS complaints_90d,
       CAST(floor((date_part('epoch', $as_of) - date_part('epoch', a.last_complaint)) / 86400) AS BIGINT) AS days_since_last_complaint
FROM population p
LEFT JOIN agg a ON a.customer_no = p.customer_no
