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
-- feature: channels_used_365d Int64: distinct channels the customer bought or engaged through, last 365 days; 0 if none
-- feature: omnichannel Int64: 1 if the customer bought through two or more channels in the last 365 days, else 0
-- feature: preferred_channel Utf8{web,store,app,call_center,email,sms,social,none}: the channel with the most purchases and customer-initiated interactions in the last 365 days (ties: alphabetical); `none` without any
WITH tx AS (
  SELECT customer_key AS customer_id, channel
  FROM transactions_resolved
  WHERE ts < $as_of AND amount > 0
    AND (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 <= 365
),
ev AS (
  SELECT customer_key AS customer_id, channel
  FROM interactions_resolved
  WHERE ts < $as_of AND event_type NOT IN ('email_sent', 'sms_sent', 'call_outbound')
    AND (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 <= 365
),
purchases AS (
  SELECT customer_id,
         count(*) AS n,
         sum(CASE WHEN channel = 'web' THEN 1 ELSE 0 END) AS web,
         sum(CASE WHEN channel = 'store' THEN 1 ELSE 0 END) AS store,
         sum(CASE WHEN channel = 'app' THEN 1 ELSE 0 END) AS app,
         count(DISTINCT channel) AS channels
  FROM tx
  GROUP BY customer_id
),
uses AS (
  SELECT customer_id, channel, count(*) AS n
  FROM (SELECT * FROM tx UNION ALL SELECT * FROM ev) u
  GROUP BY customer_id, channel
),
ranked AS (
  SELECT customer_id, channel,
         row_number() OVER (PARTITION BY customer_id ORDER BY n DESC, channel) AS rank,
         count(*) OVER (PARTITION BY customer_id) AS channels_used
  FROM uses
)
SELECT p.customer_id,
       CAST(b.web AS DOUBLE) / nullif(b.n, 0) AS purchase_share_web,
       CAST(b.store AS DOUBLE) / nullif(b.n, 0) AS purchase_share_store,
       CAST(b.app AS DOUBLE) / nullif(b.n, 0) AS purchase_share_app,
       coalesce(r.channels_used, 0) AS channels_used_365d,
       CASE WHEN b.channels >= 2 THEN 1 ELSE 0 END AS omnichannel,
       coalesce(r.channel, 'none') AS preferred_channel
FROM population p
LEFT JOIN purchases b ON b.customer_id = p.customer_id
LEFT JOIN ranked r ON r.customer_id = p.customer_id AND r.rank = 1
