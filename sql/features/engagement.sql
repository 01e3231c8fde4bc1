-- Engagement features: email, web and app activity.
-- Grain: one row per customer in population.
-- Cutoff: only interactions with ts < $as_of; "last N days" = [as_of - N days, as_of).
-- Registry (name, type, description; checked against the output by a test):
-- feature: emails_sent_90d Int64: emails sent in the last 90 days; 0 if none
-- feature: email_open_rate_90d Float64: opens / emails sent, last 90 days; NULL if none sent
-- feature: email_click_rate_90d Float64: clicks / emails sent, last 90 days; NULL if none sent
-- feature: web_visits_30d Int64: web visits, last 30 days (cookie-only visits count once the cookie is linked to the customer); 0 if none
-- feature: app_sessions_30d Int64: app sessions, last 30 days; 0 if none
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
