-- Purchase summaries: what BG/NBD and Gamma-Gamma score a customer from,
-- computed from purchase_days (same-day purchases merged, amount >= 0,
-- before $as_of) in one pass, so a nightly run never holds every purchase
-- day in memory.
-- Grain: one row per customer in population with a purchase before $as_of,
-- in customer_id order (scoring reads it beside the feature table, which
-- is in that order too).
-- first_day, last_day   first and last purchase day (days since 1970-01-01)
-- purchase_days         distinct days with a purchase (frequency + 1)
-- repeat_value          total value of every purchase day but the first
-- Sums are exact (decimal), so the result does not depend on the order in
-- which rows meet.
WITH d AS (
  SELECT p.customer_id,
         CAST(floor(date_part('epoch', t.ts) / 86400) AS BIGINT) AS day,
         sum(CAST(t.amount AS DECIMAL(18, 4))) AS value
  FROM transactions_resolved t
  JOIN population p ON p.customer_no = t.customer_no
  WHERE t.ts < $as_of AND t.amount >= 0
  GROUP BY p.customer_id, CAST(floor(date_part('epoch', t.ts) / 86400) AS BIGINT)
)
SELECT customer_id,
       min(day) AS first_day,
       max(day) AS last_day,
       count(*) AS purchase_days,
       CAST(sum(value) - first_value(value ORDER BY day) AS DOUBLE) AS repeat_value
FROM d
GROUP BY customer_id
ORDER BY customer_id
