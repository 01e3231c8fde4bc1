"""What DuckDB takes only to read the inputs the feature library reads:
every column of each table `engage features` takes in (decoded, each value
touched by an aggregate), with no identity resolution, checks or features.
A floor under any engine that reads the raw files on every run.

    python bench/read_floor.py DATA_DIR [ROUNDS]

Prints each table's scan time per round (the first round reads the files
from disk if they are not in the page cache).
"""
import sys
import time

import duckdb

data = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
con = duckdb.connect()
threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
for r in range(rounds):
    total = 0.0
    for table in ["customers", "transactions", "interactions", "contacts", "responses"]:
        columns = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{data}/{table}/*.parquet')"
        ).fetchall()
        touched = ", ".join(
            f'sum(length("{name}"))' if kind == "VARCHAR" else f'count("{name}")'
            for name, kind, *_ in columns
        )
        start = time.monotonic()
        con.execute(f"SELECT {touched} FROM read_parquet('{data}/{table}/*.parquet')").fetchall()
        took = time.monotonic() - start
        total += took
        print(f"round {r + 1} {table:<13} {took:6.2f} s")
    print(f"round {r + 1} {'all':<13} {total:6.2f} s ({threads} threads)")
