-- The core RFM query of engage's value group (sql/features/value.sql) over the
-- raw `transactions` table and engage's `identity_map`, in SQL that DuckDB and
-- DataFusion both run, for the side by side benchmark in bench/vs-duckdb.sh. Attribution: a transaction belongs
-- to the customer of its first usable identifier (customer_id, then email,
-- then loyalty_id), normalised as engage normalises them; identifiers flagged
-- `shared` attribute nothing. Placeholder: {as_of}.
WITH m AS (
  SELECT identifier_type, identifier_value, customer_key
  FROM identity_map WHERE NOT shared
),
tx AS (
  SELECT coalesce(c.customer_key, e.customer_key, l.customer_key) AS customer_id, t.ts, t.amount
  FROM transactions t
  LEFT JOIN (SELECT * FROM m WHERE identifier_type = 'customer_id') c ON c.identifier_value = trim(t.customer_id)
  LEFT JOIN (SELECT * FROM m WHERE identifier_type = 'email') e ON e.identifier_value = lower(trim(t.email))
  LEFT JOIN (SELECT * FROM m WHERE identifier_type = 'loyalty_id') l ON l.identifier_value = trim(t.loyalty_id)
  WHERE t.ts < TIMESTAMP '{as_of}' AND t.amount IS NOT NULL
)
SELECT customer_id,
       CAST(floor((date_part('epoch', TIMESTAMP '{as_of}') - date_part('epoch', max(CASE WHEN amount > 0 THEN ts END))) / 86400) AS BIGINT) AS recency_days,
       sum(CASE WHEN amount > 0 THEN 1 ELSE 0 END) AS frequency,
       CAST(sum(CAST(amount AS DECIMAL(18, 4))) AS DOUBLE) AS monetary_sum,
       CAST(sum(CASE WHEN amount > 0 THEN CAST(amount AS DECIMAL(18, 4)) END) AS DOUBLE)
         / nullif(sum(CASE WHEN amount > 0 THEN 1 ELSE 0 END), 0) AS monetary_avg,
       CAST(sum(CASE WHEN date_part('epoch', TIMESTAMP '{as_of}') - date_part('epoch', ts) <= 365 * 86400 THEN CAST(amount AS DECIMAL(18, 4)) ELSE 0 END) AS DOUBLE) AS spend_365d
FROM tx
WHERE customer_id IS NOT NULL
GROUP BY customer_id
