-- Campaign response label.
-- Grain: one row per contact record (treatment or control) with ts in
--   [as_of, as_of + $horizon_days days).
-- responded = the customer has a response to that campaign within
--   $response_days days of the contact ([contact ts, contact ts + N days)).
-- funnel_depth = the deepest response_funnel stage among those responses
--   (1-based; 0 = none or only unlisted stages); converted = that depth is
--   the funnel's last stage. A control customer received nothing, so only
--   the last stage (e.g. a purchase) can happen to them: converted, not
--   responded, is the outcome that treatment and control share (uplift).
-- offer = the campaign's offer (campaigns.offer; `contact` when the
--   campaign has none or is unknown), for treatment and control records:
--   a control record was held out from that offer.
-- treatment = the arm of the record: `control`, else the offer.
WITH c AS (
  SELECT campaign_id, customer_id, ts, "group"
  FROM contacts
  WHERE ts >= $as_of AND (date_part('epoch', ts) - date_part('epoch', $as_of)) / 86400.0 < $horizon_days
),
-- The responses in each contact's window are found by an inner join and
-- joined back on the contact's keys alone: an outer join whose ON filters
-- on the responses' columns fails in DataFusion 55's sort-merge join,
-- which engage plans under a memory limit (BENCHMARKS.md).
answered AS (
  SELECT c.customer_id, c.campaign_id, c."group", c.ts,
         count(r.ts) AS responses, max(f.depth) AS depth
  FROM c
  JOIN responses r ON r.campaign_id = c.campaign_id AND r.customer_id = c.customer_id
  LEFT JOIN response_funnel f ON f.stage = r.stage
  WHERE r.ts >= c.ts AND (date_part('epoch', r.ts) - date_part('epoch', c.ts)) / 86400.0 < $response_days
  GROUP BY c.customer_id, c.campaign_id, c."group", c.ts
),
r AS (
  SELECT k.customer_id, k.campaign_id, k."group", k.ts,
         coalesce(a.responses, 0) AS responses,
         coalesce(a.depth, 0) AS funnel_depth
  FROM (SELECT DISTINCT customer_id, campaign_id, "group", ts FROM c) k
  LEFT JOIN answered a
    ON a.customer_id = k.customer_id AND a.campaign_id = k.campaign_id
   AND a."group" = k."group" AND a.ts = k.ts
)
SELECT r.customer_id, r.campaign_id, r."group" AS contact_group, r.ts AS contact_ts,
       coalesce(k.offer, 'contact') AS offer,
       CASE WHEN r."group" = 'control' THEN 'control' ELSE coalesce(k.offer, 'contact') END AS treatment,
       r.responses > 0 AS responded,
       r.funnel_depth,
       r.funnel_depth = (SELECT max(depth) FROM response_funnel) AS converted
FROM r
LEFT JOIN campaigns k ON k.campaign_id = r.campaign_id
ORDER BY r.customer_id, r.ts, r.campaign_id
