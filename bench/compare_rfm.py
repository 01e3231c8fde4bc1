"""Check that engage's feature table and bench/rfm.sql's result agree per customer.

    python bench/compare_rfm.py ENGAGE_FEATURES.parquet RFM.parquet

Compares every column of bench/rfm_duckdb.sql with the same-named feature
for each customer of engage's table; money to a cent's hundredth (both sum
DECIMAL(18, 4)), counts and days exactly. Exits 1 on any difference.
"""
import sys

import duckdb

engage, duck = sys.argv[1:3]
columns = ["recency_days", "frequency", "monetary_sum", "monetary_avg", "spend_365d"]
con = duckdb.connect()
con.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet('{engage}')")
con.execute(f"CREATE VIEW d AS SELECT * FROM read_parquet('{duck}')")
zero_if_none = {"frequency", "monetary_sum", "spend_365d"}  # engage's 0 for "no purchase"
differs = " OR ".join(
    f"NOT (e.{c} IS NOT DISTINCT FROM {v} OR abs(e.{c} - {v}) <= 1e-6)"
    for c in columns
    for v in [f"coalesce(d.{c}, 0)" if c in zero_if_none else f"d.{c}"]
)
customers, buyers, compared, mismatched = con.execute(f"""
    SELECT count(*), count(*) FILTER (WHERE e.frequency > 0), count(d.customer_id),
           count(*) FILTER (WHERE {differs})
    FROM e LEFT JOIN d USING (customer_id)
""").fetchall()[0]
missing = con.execute(
    "SELECT count(*) FROM d ANTI JOIN e USING (customer_id) WHERE d.customer_id LIKE 'C%'"
).fetchall()[0][0]
print(f"{customers} customers in engage's table ({buyers} with purchases), "
      f"{compared} also in the query's result; {mismatched} differ; "
      f"{missing} CRM customers only in the query's result")
if mismatched:
    print(con.execute(f"SELECT e.customer_id, {', '.join('e.' + c + ', d.' + c for c in columns)} "
                      f"FROM e LEFT JOIN d USING (customer_id) WHERE {differs} LIMIT 10").fetchall())
sys.exit(1 if mismatched or missing else 0)
