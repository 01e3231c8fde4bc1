-- The universal holdout's measure: did each CRM customer buy in
-- [$since, $as_of), and for how much? `engage campaigns report` splits
-- the customers into the holdout (never contacted by engage's campaigns)
-- and everyone else, and compares the two (docs/nightly.md, "Measuring
-- results"). Purchases are transactions with amount > 0, attributed
-- through the identity graph as of $as_of.
-- Grain: one row per CRM customer.
SELECT c.customer_id,
       count(t.customer_no) > 0 AS purchased,
       coalesce(sum(t.amount), 0.0) AS revenue
FROM customers c
LEFT JOIN customer_keys k ON k.customer_key = c.customer_id AND k.crm
LEFT JOIN transactions_resolved t
  ON t.customer_no = k.customer_no AND t.ts >= $since AND t.ts < $as_of AND t.amount > 0
GROUP BY c.customer_id
