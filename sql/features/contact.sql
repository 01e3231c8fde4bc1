-- Campaign contact features.
-- Grain: one row per customer in population.
-- Cutoff: only contacts with ts < $as_of. Control-group records are not
--   contacts (the customer received nothing) and are ignored.
-- Registry (name, type, description; checked against the output by a test):
-- feature: contacts_90d Int64: campaign contacts received (treatment group only), last 90 days; 0 if none
-- feature: days_since_last_contact Int64: whole days since the last campaign contact (treatment only); NULL if never contacted
WITH c AS (
  SELECT customer_id,
         max(ts) AS last_contact,
         sum(CASE WHEN (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 <= 90 THEN 1 ELSE 0 END) AS contacts_90d
  FROM contacts
  WHERE ts < $as_of AND "group" = 'treatment'
  GROUP BY customer_id
)
SELECT p.customer_id,
       coalesce(c.contacts_90d, 0) AS contacts_90d,
       CAST(floor((date_part('epoch', $as_of) - date_part('epoch', c.last_contact)) / 86400) AS BIGINT) AS days_since_last_contact
FROM population p
LEFT JOIN c ON c.customer_id = p.customer_id
