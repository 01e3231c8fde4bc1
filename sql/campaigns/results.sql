-- Campaign results: what happened to each contacted customer, for
-- `engage campaigns report` (docs/nightly.md, "Measuring results").
-- A customer's contact is their first record in a campaign (treatment or
-- control) before $as_of; their responses are those to that campaign from
-- the contact on, within $response_days days and before $as_of.
-- Grain: one row per campaign, group, whether the customer responded, and
-- the deepest response-funnel stage reached (0 = none or only stages the
-- funnel does not list), with the customers and the revenue of their
-- responses.
WITH c AS (
  SELECT campaign_id, customer_id, "group", min(ts) AS ts
  FROM contacts
  WHERE ts < $as_of
  GROUP BY campaign_id, customer_id, "group"
),
per_customer AS (
  SELECT c.campaign_id, c."group", c.customer_id,
         count(r.ts) > 0 AS responded,
         coalesce(max(f.depth), 0) AS depth,
         coalesce(sum(r.revenue), 0.0) AS revenue
  FROM c
  LEFT JOIN responses r
    ON r.campaign_id = c.campaign_id AND r.customer_id = c.customer_id
   AND r.ts >= c.ts AND r.ts < $as_of
   AND (date_part('epoch', r.ts) - date_part('epoch', c.ts)) / 86400.0 < $response_days
  LEFT JOIN response_funnel f ON f.stage = r.stage
  GROUP BY c.campaign_id, c."group", c.customer_id
)
SELECT p.campaign_id, k.kind, k.offer, p."group", p.responded, p.depth,
       count(*) AS customers,
       sum(p.revenue) AS revenue
FROM per_customer p
LEFT JOIN campaigns k ON k.campaign_id = p.campaign_id
GROUP BY p.campaign_id, k.kind, k.offer, p."group", p.responded, p.depth
ORDER BY p.campaign_id, p."group", p.responded, p.depth
