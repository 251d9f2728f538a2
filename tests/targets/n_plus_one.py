"""An N+1 loop over a real PostgreSQL connection: one statement per parent row, for the
call-site tests. Usage: python n_plus_one.py DSN [SECONDS]. Prints "ready" once the first
round trip is done; exits by itself after SECONDS (default 60) so it never outlives a test.
"""

from __future__ import annotations

import sys
import time

import psycopg

CHILDREN = "SELECT g AS child_id, %s AS parent_id FROM generate_series(1, 3) AS g"


def load_children_one_by_one(conn: psycopg.Connection, parents: range) -> int:
    rows = 0
    with conn.cursor() as cur:
        for parent in parents:
            cur.execute(CHILDREN, (parent,))
            rows += len(cur.fetchall())
    return rows


def main() -> None:
    dsn = sys.argv[1]
    deadline = time.monotonic() + (float(sys.argv[2]) if len(sys.argv) > 2 else 60.0)
    with psycopg.connect(dsn, application_name="n-plus-one-target") as conn:
        load_children_one_by_one(conn, range(1))
        conn.commit()
        print("ready", flush=True)
        while time.monotonic() < deadline:
            load_children_one_by_one(conn, range(200))
            conn.commit()


if __name__ == "__main__":
    main()
