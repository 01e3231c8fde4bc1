-- Campaign features: contact fatigue and the response funnel.
-- Grain: one row per customer in population.
-- Cutoff: only contacts and responses with ts < $as_of. Control-group
--   records are not contacts (the customer received nothing) and are ignored.
-- Funnel: response_funnel (stage, depth) lists the configured stages in
--   order (--response-funnel, default click,visit,purchase): the depth of a
--   response is its stage's position, 1-based; a stage not listed is a
--   response of depth 0. A campaign's kind comes from the campaigns table.
-- Registry (name, type, description; checked against the output by a test):
-- feature: contacts_7d Int64: campaign contacts received (treatment group only), last 7 days; 0 if none
-- feature: contacts_30d Int64: campaign contacts received, last 30 days; 0 if none
-- feature: contacts_90d Int64: campaign contacts received, last 90 days; 0 if none
-- feature: days_since_last_contact Int64: whole days since the last campaign contact (treatment only); NULL if never contacted
-- feature: responses_90d Int64: campaigns the customer responded to (any stage), last 90 days; 0 if none
-- feature: days_since_last_response Int64: whole days since the last response to any campaign; NULL if none
-- feature: funnel_depth_wave Int64: deepest funnel stage reached in a wave campaign, last 365 days (0 = none)
-- feature: funnel_depth_trigger Int64: deepest funnel stage reached in a trigger campaign, last 365 days (0 = none)
WITH c AS (
  SELECT customer_id,
         max(ts) AS last_contact,
         sum(CASE WHEN age <= 7 THEN 1 ELSE 0 END) AS contacts_7d,
         sum(CASE WHEN age <= 30 THEN 1 ELSE 0 END) AS contacts_30d,
         sum(CASE WHEN age <= 90 THEN 1 ELSE 0 END) AS contacts_90d
  FROM (
    SELECT customer_id, ts, (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS age
    FROM contacts
    WHERE ts < $as_of AND "group" = 'treatment'
  ) t
  GROUP BY customer_id
),
r AS (
  SELECT rs.customer_id, rs.campaign_id, rs.ts, cp.kind, coalesce(f.depth, 0) AS depth,
         (date_part('epoch', $as_of) - date_part('epoch', rs.ts)) / 86400.0 AS age
  FROM responses rs
  LEFT JOIN campaigns cp ON cp.campaign_id = rs.campaign_id
  LEFT JOIN response_funnel f ON f.stage = rs.stage
  WHERE rs.ts < $as_of
),
per_campaign AS (
  SELECT customer_id, campaign_id,
         max(CASE WHEN age <= 90 THEN 1 ELSE 0 END) AS recent,
         max(ts) AS last_response,
         max(CASE WHEN kind = 'wave' AND age <= 365 THEN depth END) AS depth_wave,
         max(CASE WHEN kind = 'trigger' AND age <= 365 THEN depth END) AS depth_trigger
  FROM r
  GROUP BY customer_id, campaign_id
),
ra AS (
  SELECT customer_id,
         sum(recent) AS responses_90d,
         max(last_response) AS last_response,
         max(depth_wave) AS depth_wave,
         max(depth_trigger) AS depth_trigger
  FROM per_campaign
  GROUP BY customer_id
)
SELECT p.customer_id,
       coalesce(c.contacts_7d, 0) AS contacts_7d,
       coalesce(c.contacts_30d, 0) AS contacts_30d,
       coalesce(c.contacts_90d, 0) AS contacts_90d,
       CAST(floor((date_part('epoch', $as_of) - date_part('epoch', c.last_contact)) / 86400) AS BIGINT) AS days_since_last_contact,
       coalesce(ra.responses_90d, 0) AS responses_90d,
       CAST(floor((date_part('epoch', $as_of) - date_part('epoch', ra.last_response)) / 86400) AS BIGINT) AS days_since_last_response,
       coalesce(ra.depth_wave, 0) AS funnel_depth_wave,
       coalesce(ra.depth_trigger, 0) AS funnel_depth_trigger
FROM population p
LEFT JOIN c ON c.customer_id = p.customer_id
LEFT JOIN ra ON ra.customer_id = p.customer_id
