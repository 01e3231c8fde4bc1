-- Purchase days: the input of the CLV models (BG/NBD, Gamma-Gamma).
-- Grain: one row per customer in population and calendar day (UTC) with a
--   purchase before $as_of: purchases on the same day are one purchase, as
--   the literature counts them, and their amounts are summed.
-- A purchase is a transaction with amount >= 0: a free item (amount 0) is a
--   purchase occasion, as in the CDNOW data the models are checked on (the
--   value features count amount > 0); refunds (amount < 0) are left out.
-- Days are whole days since 1970-01-01 (`day`), so times are exact.
SELECT p.customer_id,
       CAST(floor(date_part('epoch', t.ts) / 86400) AS BIGINT) AS day,
       CAST(sum(CAST(t.amount AS DECIMAL(18, 4))) AS DOUBLE) AS value
FROM transactions_resolved t
JOIN population p ON p.customer_no = t.customer_no
WHERE t.ts < $as_of AND t.amount >= 0
GROUP BY p.customer_id, CAST(floor(date_part('epoch', t.ts) / 86400) AS BIGINT)
