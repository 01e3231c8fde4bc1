-- Contact history: each customer's campaign contacts in the $days days
-- before $as_of and what they led to, for the dashboard's customer page
-- (docs/dashboard.md). A contact is a customer's first record in a
-- campaign (treatment or control) in the window; its responses are those
-- to that campaign from the contact on, within $response_days days and
-- before $as_of, as in sql/campaigns/results.sql.
-- Grain: one row per customer and campaign contacted in the window.
WITH c AS (
  SELECT campaign_id, customer_id, "group", min(ts) AS ts, min(channel) AS channel
  FROM contacts
  WHERE ts < $as_of
    AND (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 <= $days
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
per_contact AS (
  SELECT c.customer_id, c.campaign_id, c."group", c.channel, c.ts,
         coalesce(a.responses, 0) AS responses,
         a.depth,
         coalesce(a.revenue, 0.0) AS revenue
  FROM c
  LEFT JOIN answered a
    ON a.campaign_id = c.campaign_id AND a.customer_id = c.customer_id AND a."group" = c."group"
)
-- deepest_stage: the deepest funnel stage a response reached (null when
-- none, or only stages the funnel does not list).
SELECT p.customer_id, p.campaign_id, p."group", p.channel,
       CAST(p.ts AS DATE) AS contacted_on,
       p.responses, s.stage AS deepest_stage, p.revenue
FROM per_contact p
LEFT JOIN response_funnel s ON s.depth = p.depth
