"""Run bench/rfm.sql in DuckDB or DataFusion (Python bindings) and write the
result as Parquet; prints the query's own wall time.

    python bench/rfm.py duckdb|datafusion DATA_DIR IDENTITY_MAP AS_OF OUT.parquet
"""
import os
import pathlib
import sys
import time

engine, data, identity_map, as_of, out = sys.argv[1:6]
sql = (pathlib.Path(__file__).parent / "rfm.sql").read_text().format(as_of=as_of)
start = time.monotonic()
if engine == "duckdb":
    import duckdb as lib

    con = lib.connect()
    con.execute(f"CREATE VIEW transactions AS SELECT * FROM read_parquet('{data}/transactions/*.parquet')")
    con.execute(f"CREATE VIEW identity_map AS SELECT * FROM read_parquet('{identity_map}')")
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
elif engine == "datafusion":
    import datafusion as lib

    ctx = lib.SessionContext()
    ctx.register_parquet("transactions", f"{data}/transactions/")
    ctx.register_parquet("identity_map", identity_map)
    ctx.sql(sql).write_parquet(out)
    threads = os.cpu_count()
else:
    sys.exit(f"unknown engine {engine!r}: expected duckdb or datafusion")
print(f"{engine} {lib.__version__}: RFM query {time.monotonic() - start:.1f} s ({threads} threads)")
