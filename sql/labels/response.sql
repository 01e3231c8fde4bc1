-- Campaign response label.
-- Grain: one row per contact record (treatment or control) with ts in
--   [as_of, as_of + $horizon_days days).
-- responded = the customer has a response to that campaign within
--   $response_days days of the contact ([contact ts, contact ts + N days)).
--   A control record carries its group: control customers were not
--   contacted, so their responses measure what happens anyway (uplift).
WITH c AS (
  SELECT campaign_id, customer_id, ts, "group"
  FROM contacts
  WHERE ts >= $as_of AND (date_part('epoch', ts) - date_part('epoch', $as_of)) / 86400.0 < $horizon_days
)
SELECT c.customer_id, c.campaign_id, c."group" AS contact_group, c.ts AS contact_ts,
       count(r.ts) > 0 AS responded
FROM c
LEFT JOIN responses r
  ON r.campaign_id = c.campaign_id AND r.customer_id = c.customer_id
 AND r.ts >= c.ts AND (date_part('epoch', r.ts) - date_part('epoch', c.ts)) / 86400.0 < $response_days
GROUP BY c.customer_id, c.campaign_id, c."group", c.ts
ORDER BY c.customer_id, c.ts, c.campaign_id
