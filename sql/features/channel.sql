-- Channel features: where the customer buys and engages.
-- Grain: one row per customer in population.
-- Cutoff: purchases (amount > 0) and customer-initiated interactions with
--   ts in the last 365 days before $as_of. Outbound events (email_sent,
--   sms_sent, call_outbound) are the business's actions, not the customer's,
--   and do not count as channel use.
-- Registry (name, type, description; checked against the output by a test):
-- feature: purchase_share_web Float64: share of purchases made on the web, last 365 days; NULL if none
-- feature: purchase_share_store Float64: share of purchases made in store, last 365 days; NULL if none
-- feature: purchase_share_app Float64: share of purchases made in the app, last 365 days; NULL if none
-- feature: interaction_share_web Float64: share of customer-initiated interactions (outbound excluded) on the web, last 365 days; NULL if none
-- feature: interaction_share_app Float64: share of customer-initiated interactions in the app, last 365 days; NULL if none
-- feature: interaction_share_email Float64: share of customer-initiated interactions by email (opens, clicks), last 365 days; NULL if none
-- feature: interaction_share_call_center Float64: share of customer-initiated interactions with the call center (inbound calls, complaints), last 365 days; NULL if none
-- feature: interaction_share_store Float64: share of customer-initiated interactions in store (visits), last 365 days; NULL if none
-- feature: channels_used_365d Int64: distinct channels the customer bought or engaged through, last 365 days; 0 if none
-- feature: omnichannel Int64: 1 if the customer bought through two or more channels in the last 365 days, else 0
-- feature: preferred_channel Utf8{web,store,app,call_center,email,sms,social,none}: the channel with the most purchases and customer-initiated interactions in the last 365 days (ties: alphabetical); `none` without any
WITH tx AS (
  SELECT customer_no,
         sum(CASE WHEN channel = 'web' THEN 1 ELSE 0 END) AS web,
         sum(CASE WHEN channel = 'store' THEN 1 ELSE 0 END) AS store,
         sum(CASE WHEN channel = 'app' THEN 1 ELSE 0 END) AS app,
         sum(CASE WHEN channel = 'call_center' THEN 1 ELSE 0 END) AS call_center,
         count(*) AS n
  FROM transactions_resolved
  WHERE ts < $as_of AND amount > 0
    AND (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 <= 365
  GROUP BY customer_no
),
ev AS (
  SELECT customer_no,
         sum(CASE WHEN channel = 'web' THEN 1 ELSE 0 END) AS web,
         sum(CASE WHEN channel = 'store' THEN 1 ELSE 0 END) AS store,
         sum(CASE WHEN channel = 'app' THEN 1 ELSE 0 END) AS app,
         sum(CASE WHEN channel = 'call_center' THEN 1 ELSE 0 END) AS call_center,
         sum(CASE WHEN channel = 'email' THEN 1 ELSE 0 END) AS email,
         sum(CASE WHEN channel = 'sms' THEN 1 ELSE 0 END) AS sms,
         sum(CASE WHEN channel = 'social' THEN 1 ELSE 0 END) AS social,
         count(*) AS n
  FROM interactions_resolved
  WHERE ts < $as_of AND event_type NOT IN ('email_sent', 'sms_sent', 'call_outbound')
    AND (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 <= 365
  GROUP BY customer_no
),
uses AS (
  SELECT p.customer_id,
         coalesce(t.app, 0) + coalesce(e.app, 0) AS app,
         coalesce(t.call_center, 0) + coalesce(e.call_center, 0) AS call_center,
         coalesce(e.email, 0) AS email,
         coalesce(e.sms, 0) AS sms,
         coalesce(e.social, 0) AS social,
         coalesce(t.store, 0) + coalesce(e.store, 0) AS store,
         coalesce(t.web, 0) + coalesce(e.web, 0) AS web,
         t.web AS buy_web, t.store AS buy_store, t.app AS buy_app, t.call_center AS buy_call_center, t.n AS buys,
         e.web AS ev_web, e.app AS ev_app, e.email AS ev_email, e.call_center AS ev_call_center,
         e.store AS ev_store, e.n AS evs
  FROM population p
  LEFT JOIN tx t ON t.customer_no = p.customer_no
  LEFT JOIN ev e ON e.customer_no = p.customer_no
),
best AS (
  SELECT *, greatest(app, call_center, email, sms, social, store, web) AS top
  FROM uses
)
-- Ties go to the alphabetically first channel: the CASE tests in that order.
SELECT customer_id,
       CAST(buy_web AS DOUBLE) / nullif(buys, 0) AS purchase_share_web,
       CAST(buy_store AS DOUBLE) / nullif(buys, 0) AS purchase_share_store,
       CAST(buy_app AS DOUBLE) / nullif(buys, 0) AS purchase_share_app,
       CAST(ev_web AS DOUBLE) / nullif(evs, 0) AS interaction_share_web,
       CAST(ev_app AS DOUBLE) / nullif(evs, 0) AS interaction_share_app,
       CAST(ev_email AS DOUBLE) / nullif(evs, 0) AS interaction_share_email,
       CAST(ev_call_center AS DOUBLE) / nullif(evs, 0) AS interaction_share_call_center,
       CAST(ev_store AS DOUBLE) / nullif(evs, 0) AS interaction_share_store,
       CAST((app > 0) AS BIGINT) + CAST((call_center > 0) AS BIGINT) + CAST((email > 0) AS BIGINT)
         + CAST((sms > 0) AS BIGINT) + CAST((social > 0) AS BIGINT) + CAST((store > 0) AS BIGINT)
         + CAST((web > 0) AS BIGINT) AS channels_used_365d,
       CASE WHEN CAST((coalesce(buy_web, 0) > 0) AS BIGINT) + CAST((coalesce(buy_store, 0) > 0) AS BIGINT)
                 + CAST((coalesce(buy_app, 0) > 0) AS BIGINT) + CAST((coalesce(buy_call_center, 0) > 0) AS BIGINT) >= 2
            THEN 1 ELSE 0 END AS omnichannel,
       CASE WHEN top = 0 THEN 'none'
            WHEN app = top THEN 'app'
            WHEN call_center = top THEN 'call_center'
            WHEN email = top THEN 'email'
            WHEN sms = top THEN 'sms'
            WHEN social = top THEN 'social'
            WHEN store = top THEN 'store'
            ELSE 'web' END AS preferred_channel
FROM best
