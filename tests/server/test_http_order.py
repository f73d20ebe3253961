#!/usr/bin/env python3
"""test_http_order.py: scroll with order_by — ascending and descending by a
number or a date-time, start_from, the filter, order_value on every point,
points without the key left out, and the errors.

Run by test_http.py under CTest (`server_http`), or alone with QV_TEST_BIN /
QV_CLI set.
"""
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qvserver import Base  # noqa: E402


class OrderByTest(Base):
    def seeded(self):
        c = self.coll(size=2, distance="Euclid")
        rnd = random.Random(5)
        pts, self.price, self.when = [], {}, {}
        for i in range(1, 121):
            payload = {"cat": "a" if i % 2 else "b"}
            if i % 10:  # every tenth point has no price
                p = rnd.choice([rnd.randint(0, 50), rnd.randint(0, 50) + 0.5])
                payload["price"] = p
                self.price[i] = p
            day = 1 + i % 28
            payload["t"] = "2024-02-%02dT12:00:00Z" % day
            self.when[i] = day
            pts.append({"id": i, "vector": [i, 0], "payload": payload})
        self.upsert(c, pts)
        return c

    def expect(self, desc=False, start=None, cat=None, limit=10):
        rows = [(p, i) for i, p in self.price.items()
                if (cat is None or (i % 2 == 1) == (cat == "a"))
                and (start is None or (p <= start if desc else p >= start))]
        rows.sort(key=lambda r: ((-r[0]) if desc else r[0], r[1]))
        return rows[:limit]

    def test_ascending_descending_start_from_and_filter(self):
        c = self.seeded()
        r = self.ok("POST", c + "/points/scroll", {"order_by": "price", "limit": 15})
        got = [(p["order_value"], p["id"]) for p in r["points"]]
        self.assertEqual(got, self.expect(limit=15))
        self.assertIsNone(r["next_page_offset"])
        self.assertIn("payload", r["points"][0])
        r = self.ok("POST", c + "/points/scroll",
                    {"order_by": {"key": "price", "direction": "desc", "start_from": 30},
                     "limit": 12, "filter": {"must": [{"key": "cat", "match": {"value": "b"}}]}})
        got = [(p["order_value"], p["id"]) for p in r["points"]]
        self.assertEqual(got, self.expect(desc=True, start=30, cat="b", limit=12))
        # every point without a price is left out
        r = self.ok("POST", c + "/points/scroll", {"order_by": "price", "limit": 1000})
        self.assertEqual(len(r["points"]), len(self.price))

    def test_datetime_order(self):
        c = self.seeded()
        r = self.ok("POST", c + "/points/scroll",
                    {"order_by": {"key": "t", "start_from": "2024-02-20T00:00:00Z"},
                     "limit": 200, "with_payload": False})
        days = [self.when[p["id"]] for p in r["points"]]
        self.assertEqual(days, sorted(days))
        self.assertTrue(all(d >= 20 for d in days))
        self.assertEqual(len(days), sum(1 for d in self.when.values() if d >= 20))

    def test_errors(self):
        c = self.seeded()
        self.err(400, "POST", c + "/points/scroll", {"order_by": {"direction": "asc"}})
        self.err(400, "POST", c + "/points/scroll",
                 {"order_by": {"key": "price", "direction": "up"}})
        self.err(400, "POST", c + "/points/scroll",
                 {"order_by": {"key": "price", "start_from": "yesterday"}})
        self.err(400, "POST", c + "/points/scroll",
                 {"order_by": {"key": "price", "bogus": 1}})
        self.err(400, "POST", c + "/points/scroll", {"order_by": "price", "offset": 3},
                 contains="start_from")


if __name__ == "__main__":
    unittest.main()
