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
-- The responses in each contact's window are found by an inner join and
-- joined back on the contact's keys alone: an outer join whose ON filters
-- on the responses' columns fails in DataFusion 55's sort-merge join,
-- which engage plans under a memory limit (BENCHMARKS.md).
answered AS (
  SELECT c.campaign_id, c."group", c.customer_id,
         count(r.ts) AS responses, max(f.depth) AS depth, sum(r.revenue) AS revenue
  FROM c
  JOIN responses r ON r.campaign_id = c.campaign_id AND r.customer_id = c.customer_id
  LEFT JOIN response_funnel f ON f.stage = r.stage
  WHERE r.ts >= c.ts AND r.ts < $as_of
    AND (date_part('epoch', r.ts) - date_part('epoch', c.ts)) / 86400.0 < $response_days
  GROUP BY c.campaign_id, c."group", c.customer_id
),
per_customer AS (
  SELECT c.campaign_id, c."group", c.customer_id,
         coalesce(a.responses, 0) > 0 AS responded,
         coalesce(a.depth, 0) AS depth,
         coalesce(a.revenue, 0.0) AS revenue
  FROM c
  LEFT JOIN answered a
    ON a.campaign_id = c.campaign_id AND a.customer_id = c.customer_id AND a."group" = c."group"
)
SELECT p.campaign_id, k.kind, k.offer, p."group", p.responded, p.depth,
       count(*) AS customers,
       sum(p.revenue) AS revenue
FROM per_customer p
LEFT JOIN campaigns k ON k.campaign_id = p.campaign_id
GROUP BY p.campaign_id, k.kind, k.offer, p."group", p.responded, p.depth
ORDER BY p.campaign_id, p."group", p.responded, p.depth
