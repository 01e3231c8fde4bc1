-- Engagement features: email, SMS, web and app activity.
-- Grain: one row per customer in population.
-- Cutoff: only interactions with ts < $as_of; "last N days" = [as_of - N days, as_of).
-- Customer-initiated events (the customer engaged): email_open, email_click,
--   sms_click, web_visit, app_session, store_visit, call_inbound, complaint.
--   email_sent, sms_sent and call_outbound are the business's actions.
-- Registry (name, type, description; checked against the output by a test):
-- feature: emails_sent_30d Int64: emails sent in the last 30 days; 0 if none
-- feature: email_open_rate_30d Float64: opens / emails sent, last 30 days; NULL if none sent
-- feature: email_click_rate_30d Float64: clicks / emails sent, last 30 days; NULL if none sent
-- feature: emails_sent_90d Int64: emails sent in the last 90 days; 0 if none
-- feature: email_open_rate_90d Float64: opens / emails sent, last 90 days; NULL if none sent
-- feature: email_click_rate_90d Float64: clicks / emails sent, last 90 days; NULL if none sent
-- feature: sms_sent_90d Int64: text messages sent in the last 90 days; 0 if none
-- feature: sms_click_rate_90d Float64: SMS clicks / messages sent, last 90 days; NULL if none sent
-- feature: web_visits_30d Int64: web visits, last 30 days (cookie-only visits count once the cookie is linked to the customer); 0 if none
-- feature: app_sessions_30d Int64: app sessions, last 30 days; 0 if none
-- feature: web_visits_90d Int64: web visits, last 90 days (as web_visits_30d); 0 if none
-- feature: app_sessions_90d Int64: app sessions, last 90 days; 0 if none
-- feature: engagement_trend Float64: customer-initiated events per day, last 30 days (r30) against the 60 days before (r60): `(r30 - r60) / (r30 + r60)`, in [-1, 1]; 0 when both are 0
-- feature: days_since_last_engagement Int64: whole days since the last customer-initiated event of any kind; NULL if none
-- The counts look back at most 90 days, so they read only the last 91 days
--   of events (a cheap filter on ts; the CASE limits still decide); the
--   last engagement, over all history, is found among engaged events only.
WITH events AS (
  SELECT customer_no, event_type, ts,
         event_type IN ('email_open', 'email_click', 'sms_click', 'web_visit', 'app_session',
                        'store_visit', 'call_inbound', 'complaint') AS engaged
  FROM interactions_resolved
  WHERE ts < $as_of
),
ev AS (
  SELECT customer_no, event_type, engaged,
         (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS age_days
  FROM events
  WHERE ts >= $as_of - INTERVAL '91 days'
),
last_engaged AS (
  SELECT customer_no, max(ts) AS last_engaged
  FROM events
  WHERE engaged
  GROUP BY customer_no
),
agg AS (
  SELECT customer_no,
         sum(CASE WHEN event_type = 'email_sent' AND age_days <= 30 THEN 1 ELSE 0 END) AS emails_sent_30d,
         sum(CASE WHEN event_type = 'email_open' AND age_days <= 30 THEN 1 ELSE 0 END) AS email_opens_30d,
         sum(CASE WHEN event_type = 'email_click' AND age_days <= 30 THEN 1 ELSE 0 END) AS email_clicks_30d,
         sum(CASE WHEN event_type = 'email_sent' AND age_days <= 90 THEN 1 ELSE 0 END) AS emails_sent_90d,
         sum(CASE WHEN event_type = 'email_open' AND age_days <= 90 THEN 1 ELSE 0 END) AS email_opens_90d,
         sum(CASE WHEN event_type = 'email_click' AND age_days <= 90 THEN 1 ELSE 0 END) AS email_clicks_90d,
         sum(CASE WHEN event_type = 'sms_sent' AND age_days <= 90 THEN 1 ELSE 0 END) AS sms_sent_90d,
         sum(CASE WHEN event_type = 'sms_click' AND age_days <= 90 THEN 1 ELSE 0 END) AS sms_clicks_90d,
         sum(CASE WHEN event_type = 'web_visit' AND age_days <= 30 THEN 1 ELSE 0 END) AS web_visits_30d,
         sum(CASE WHEN event_type = 'app_session' AND age_days <= 30 THEN 1 ELSE 0 END) AS app_sessions_30d,
         sum(CASE WHEN event_type = 'web_visit' AND age_days <= 90 THEN 1 ELSE 0 END) AS web_visits_90d,
         sum(CASE WHEN event_type = 'app_session' AND age_days <= 90 THEN 1 ELSE 0 END) AS app_sessions_90d,
         sum(CASE WHEN engaged AND age_days <= 30 THEN 1 ELSE 0 END) AS engaged_30d,
         sum(CASE WHEN engaged AND age_days > 30 AND age_days <= 90 THEN 1 ELSE 0 END) AS engaged_prev_60d
  FROM ev
  GROUP BY customer_no
)
SELECT p.customer_id,
       coalesce(a.emails_sent_30d, 0) AS emails_sent_30d,
       CAST(a.email_opens_30d AS DOUBLE) / nullif(a.emails_sent_30d, 0) AS email_open_rate_30d,
       CAST(a.email_clicks_30d AS DOUBLE) / nullif(a.emails_sent_30d, 0) AS email_click_rate_30d,
       coalesce(a.emails_sent_90d, 0) AS emails_sent_90d,
       CAST(a.email_opens_90d AS DOUBLE) / nullif(a.emails_sent_90d, 0) AS email_open_rate_90d,
       CAST(a.email_clicks_90d AS DOUBLE) / nullif(a.emails_sent_90d, 0) AS email_click_rate_90d,
       coalesce(a.sms_sent_90d, 0) AS sms_sent_90d,
       CAST(a.sms_clicks_90d AS DOUBLE) / nullif(a.sms_sent_90d, 0) AS sms_click_rate_90d,
       coalesce(a.web_visits_30d, 0) AS web_visits_30d,
       coalesce(a.app_sessions_30d, 0) AS app_sessions_30d,
       coalesce(a.web_visits_90d, 0) AS web_visits_90d,
       coalesce(a.app_sessions_90d, 0) AS app_sessions_90d,
       coalesce((a.engaged_30d / 30.0 - a.engaged_prev_60d / 60.0)
                / nullif(a.engaged_30d / 30.0 + a.engaged_prev_60d / 60.0, 0), 0.0) AS engagement_trend,
       CAST(floor((date_part('epoch', $as_of) - date_part('epoch', le.last_engaged)) / 86400) AS BIGINT) AS days_since_last_engagement
FROM population p
LEFT JOIN agg a ON a.customer_no = p.customer_no
LEFT JOIN last_engaged le ON le.customer_no = p.customer_no
