-- Identity quality against ground truth (generated data only).
-- Grain: one row per identifier known to both the identity map and
--   truth_identities (the generator's truth/identities), with the resolved
--   key and the true customer. Identifiers the truth gives to several
--   customers (a family email, a shop's phone) have no single right answer
--   and are left out, and so are identifiers the data never shows next to
--   another one (linked = false: no method could attribute them; their
--   count is reported as unlinked_identifiers).
WITH truth AS (
  SELECT identifier_type, identifier_value, min(customer_id) AS true_customer
  FROM truth_identities
  GROUP BY identifier_type, identifier_value
  HAVING count(DISTINCT customer_id) = 1
)
SELECT m.customer_key, t.true_customer
FROM identity_map m
JOIN truth t ON t.identifier_type = m.identifier_type AND t.identifier_value = m.identifier_value
WHERE m.linked
