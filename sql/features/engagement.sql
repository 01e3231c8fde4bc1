-- Engagement features: email, web and app activity.
-- Grain: one row per customer in population.
-- Cutoff: only interactions with ts < $as_of; "last N days" = [as_of - N days, as_of).
-- Nulls: counts are 0; email_open_rate_90d and email_click_rate_90d are
--   opens (clicks) / emails sent in the last 90 days, NULL when none was sent.
WITH ev AS (
  SELECT customer_key AS customer_id, event_type,
         (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS age_days
  FROM interactions_resolved
  WHERE ts < $as_of
),
agg AS (
  SELECT customer_id,
         sum(CASE WHEN event_type = 'email_sent' AND age_days <= 90 THEN 1 ELSE 0 END) AS emails_sent_90d,
         sum(CASE WHEN event_type = 'email_open' AND age_days <= 90 THEN 1 ELSE 0 END) AS email_opens_90d,
         sum(CASE WHEN event_type = 'email_click' AND age_days <= 90 THEN 1 ELSE 0 END) AS email_clicks_90d,
         sum(CASE WHEN event_type = 'web_visit' AND age_days <= 30 THEN 1 ELSE 0 END) AS web_visits_30d,
         sum(CASE WHEN event_type = 'app_session' AND age_days <= 30 THEN 1 ELSE 0 END) AS app_sessions_30d
  FROM ev
  GROUP BY customer_id
)
SELECT p.customer_id,
       coalesce(a.emails_sent_90d, 0) AS emails_sent_90d,
       CAST(a.email_opens_90d AS DOUBLE) / nullif(a.emails_sent_90d, 0) AS email_open_rate_90d,
       CAST(a.email_clicks_90d AS DOUBLE) / nullif(a.emails_sent_90d, 0) AS email_click_rate_90d,
       coalesce(a.web_visits_30d, 0) AS web_visits_30d,
       coalesce(a.app_sessions_30d, 0) AS app_sessions_30d
FROM population p
LEFT JOIN agg a ON a.customer_id = p.customer_id
