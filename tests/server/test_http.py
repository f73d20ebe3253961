#!/usr/bin/env python3
"""test_http.py: system tests of `quiver serve` over real HTTP.

Starts the real server (see qvserver.py) on a free loopback port with a
fresh data directory and checks every endpoint (named vectors and float
round trips: test_http_vectors.py; snapshots: test_http_snapshots.py, both
run from here too): envelopes and required
fields, status codes and messages for bad input, auth, keep-alive, body
limit, persistence across SIGTERM and kill -9, score conventions, scroll
pagination, query/prefetch/fusion math and recommend.

Standard library only; run as `python3 tests/server/test_http.py` with
QV_TEST_BIN (and optionally QV_CLI) set, as CTest does. Tests marked
"[engine filters]" exercise qv_filter_parse / qv_*_filtered / qv_payload_*.
"""
import http.client
import json
import math
import os
import signal
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qvserver import Base, Server, assert_sanitizer_clean, free_port, server_command  # noqa: E402
# The suites of the other modules run under the same CTest entry.
from test_http_vectors import *  # noqa: E402,F401,F403
from test_http_snapshots import *  # noqa: E402,F401,F403
from test_http_order import *  # noqa: E402,F401,F403
from test_http_quant import *  # noqa: E402,F401,F403

import subprocess  # noqa: E402


# ---- service ------------------------------------------------------------------------

class ServiceTest(Base):
    def test_root_reports_a_compatible_qdrant_version(self):
        status, r = self.call("GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(r["title"], "qdrant - vector search engine")
        self.assertTrue(r["version"].startswith("1."))
        self.assertIn("quiver_version", r)

    def test_probes_answer_plain_text(self):
        for p in ("/healthz", "/livez", "/readyz"):
            status, h, body = self.srv.request("GET", p)
            self.assertEqual(status, 200)
            self.assertTrue(h["content-type"].startswith("text/plain"))
            self.assertEqual(body, b"healthz check passed")

    def test_unknown_route_is_404_and_wrong_method_405(self):
        self.err(404, "GET", "/nothing/here")
        code, h, _ = self.srv.request("POST", "/collections")
        self.assertEqual(code, 405)
        self.assertIn("GET", h.get("allow", ""))

    def test_trailing_slash_is_ignored(self):
        self.coll()
        r = self.ok("GET", "/collections/test_trailing_slash_is_ignored/")
        self.assertEqual(r["config"]["params"]["vectors"]["size"], 4)

    def test_metrics_use_route_patterns_and_count_points(self):
        c = self.coll("metrics_coll")
        self.upsert(c, [{"id": i, "vector": [1, i, 0, 0]} for i in range(5)])
        self.err(404, "GET", "/collections/no_such_coll_xyz")
        status, h, body = self.srv.request("GET", "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertIn('quiver_http_requests_total{method="PUT",endpoint="/collections/{name}/points",status="200"}', text)
        self.assertIn('quiver_http_requests_total{method="GET",endpoint="/collections/{name}",status="404"}', text)
        self.assertIn('quiver_http_request_duration_seconds_bucket{endpoint="/collections/{name}/points",le="+Inf"}', text)
        self.assertIn('quiver_collection_points{collection="metrics_coll"} 5', text)
        gauges = {}
        for line in text.splitlines():
            if line.startswith("quiver_collection_") and 'collection="metrics_coll"' in line:
                gauges[line.split("{")[0]] = float(line.split()[-1])
        for g in ("vector_bytes", "vector_disk_bytes", "code_bytes", "graph_bytes", "payload_bytes",
                  "wal_bytes", "pending_builds",
                  "segments", "indexed_vectors"):
            self.assertIn("quiver_collection_" + g, gauges, g)
        self.assertGreaterEqual(gauges["quiver_collection_vector_bytes"], 5 * 4 * 4)
        self.assertGreater(gauges["quiver_collection_wal_bytes"], 0)
        self.assertIn("quiver_simd_info{isa=", text)
        self.assertIn("quiver_process_resident_memory_bytes", text)
        self.assertNotIn('endpoint="/collections/no_such_coll_xyz', text)

    def test_keep_alive_serves_many_requests_on_one_connection(self):
        c = self.coll()
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30)
        try:
            conn.connect()
            sock = conn.sock
            for i in range(20):
                status, _, body = self.srv.request("PUT", c + "/points?wait=true",
                                                   {"points": [{"id": i, "vector": [1, 0, 0, i]}]},
                                                   conn=conn)
                self.assertEqual(status, 200, body)
                status, _, body = self.srv.request("POST", c + "/points/count", {}, conn=conn)
                self.assertEqual(json.loads(body)["result"]["count"], i + 1)
                self.assertIs(conn.sock, sock)  # the same TCP connection
        finally:
            conn.close()


# ---- collections ---------------------------------------------------------------------

class CollectionTest(Base):
    def test_create_list_exists_info_delete(self):
        c = self.coll("lifecycle", size=8, distance="Dot", hnsw_config={"m": 8, "ef_construct": 50})
        self.err(409, "PUT", c, {"vectors": {"size": 8, "distance": "Dot"}},
                 "Collection `lifecycle` already exists!")
        names = [x["name"] for x in self.ok("GET", "/collections")["collections"]]
        self.assertIn("lifecycle", names)
        self.assertEqual(self.ok("GET", c + "/exists"), {"exists": True})
        info = self.ok("GET", c)
        for k in ("status", "optimizer_status", "segments_count", "points_count",
                  "indexed_vectors_count", "config", "payload_schema"):
            self.assertIn(k, info)
        self.assertEqual(info["status"], "green")
        self.assertEqual(info["optimizer_status"], "ok")
        self.assertEqual(info["config"]["params"]["vectors"], {"size": 8, "distance": "Dot"})
        self.assertEqual(info["config"]["params"]["replication_factor"], 1)
        self.assertEqual(info["config"]["hnsw_config"]["m"], 8)
        self.assertEqual(info["config"]["hnsw_config"]["ef_construct"], 50)
        for k in ("default_segment_number", "flush_interval_sec"):
            self.assertIn(k, info["config"]["optimizer_config"])
        self.assertIn("wal_capacity_mb", info["config"]["wal_config"])
        self.assertIs(self.ok("DELETE", c), True)
        self.assertIs(self.ok("DELETE", c), False)
        self.assertEqual(self.ok("GET", c + "/exists"), {"exists": False})
        self.err(404, "GET", c, contains="Not found: Collection `lifecycle` doesn't exist!")

    def test_create_rejects_bad_configs(self):
        p = "/collections/badcfg"
        self.err(400, "PUT", p, {"vectors": {"size": 0, "distance": "Cosine"}}, "Format error in JSON body")
        self.err(422, "PUT", p, {"vectors": {"size": 70000, "distance": "Cosine"}}, "Validation error")
        self.err(400, "PUT", p, {"vectors": {"size": 4, "distance": "cosinus"}}, "unknown variant")
        self.err(400, "PUT", p, {"vectors": {"size": "4", "distance": "Cosine"}}, "Format error")
        self.err(400, "PUT", p, {}, "missing field `vectors`")
        self.err(400, "PUT", p, {"vectors": {"text": {"size": 4, "distance": "Cosine",
                                                      "multivector_config": {"comparator": "max_sim"}}}},
                 "multivectors are not supported")
        self.err(400, "PUT", p, raw=b"{not json", contains="Format error in JSON body")
        self.assertEqual(self.ok("GET", p + "/exists"), {"exists": False})

    def test_create_rejects_bad_names(self):
        self.err(422, "PUT", "/collections/a:b", {"vectors": {"size": 4, "distance": "Cosine"}},
                 "Validation error")
        self.err(400, "PUT", "/collections/.hidden", {"vectors": {"size": 4, "distance": "Cosine"}})
        self.err(422, "PUT", "/collections/" + "x" * 300, {"vectors": {"size": 4, "distance": "Cosine"}})

    def test_encoded_nul_in_a_path_names_no_other_collection(self):
        c = self.coll("nulvictim")
        # Decoded to a NUL, the name would end at "nulvictim" and the DELETE
        # would drop that collection.
        self.err(404, "GET", c + "%00x", contains="nulvictim%00x")
        self.assertIs(self.ok("DELETE", c + "%00x"), False)
        self.assertEqual(self.ok("GET", c + "/exists"), {"exists": True})
        self.err(400, "GET", c + "/points/1%001", contains="1%001")
        self.assertEqual(self.ok("GET", "/collections/nulvicti%6d/exists"), {"exists": True})

    def test_patch_accepts_known_sections(self):
        c = self.coll()
        self.assertIs(self.ok("PATCH", c, {"optimizers_config": {"indexing_threshold": 1000}}), True)
        self.assertEqual(self.ok("GET", c)["config"]["optimizer_config"]["indexing_threshold"], 1000)
        self.err(400, "PATCH", c, {"hnsw_config": 5}, "Format error")
        self.err(404, "PATCH", "/collections/absent_patch", {})

    def test_patch_changes_hnsw_settings_and_refuses_fixed_ones(self):
        c = self.coll(size=4, distance="Dot")
        self.upsert(c, [{"id": i, "vector": [1, i, 0, 0]} for i in range(20)])
        self.assertIs(self.ok("PATCH", c, {"hnsw_config": {"m": 8, "ef_construct": 40,
                                                           "full_scan_threshold": 7}}), True)
        h = self.ok("GET", c)["config"]["hnsw_config"]
        self.assertEqual((h["m"], h["ef_construct"], h["full_scan_threshold"]), (8, 40, 7))
        self.assertIs(self.ok("PATCH", c, {"vectors": {"": {"hnsw_config": {"m": 12}}}}), True)
        self.assertEqual(self.ok("GET", c)["config"]["hnsw_config"]["m"], 12)
        self.err(400, "PATCH", c, {"hnsw_config": {"m": 2}}, "hnsw m 2")
        self.err(400, "PATCH", c, {"hnsw_config": {"m": "8"}}, "Format error")
        self.err(400, "PATCH", c, {"quantization_config": {"scalar": {"type": "int8"}}},
                 "recreate the collection")
        self.assertEqual(self.ok("GET", c)["config"]["hnsw_config"]["m"], 12)
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 20)

    def test_info_counts_points(self):
        c = self.coll()
        self.upsert(c, [{"id": i, "vector": [1, 0, 0, i]} for i in range(7)])
        info = self.ok("GET", c)
        self.assertEqual(info["points_count"], 7)
        self.assertGreaterEqual(info["segments_count"], 1)

    def test_payload_index_declared_and_reported(self):
        c = self.coll()
        self.upsert(c, [{"id": 1, "vector": [1, 0, 0, 0], "payload": {"city": "Oslo"}},
                        {"id": 2, "vector": [0, 1, 0, 0], "payload": {"other": 1}}])
        r = self.ok("PUT", c + "/index?wait=true", {"field_name": "city", "field_schema": "keyword"})
        self.assertEqual(r["status"], "completed")
        self.ok("PUT", c + "/index", {"field_name": "n", "field_schema": {"type": "integer", "range": True}})
        schema = self.ok("GET", c)["payload_schema"]
        self.assertEqual(schema["city"]["data_type"], "keyword")
        self.assertEqual(schema["n"]["data_type"], "integer")
        self.assertEqual(schema["city"]["points"], 1)  # [engine filters]
        self.err(400, "PUT", c + "/index", {"field_name": "x", "field_schema": "vector"})
        self.err(400, "PUT", c + "/index", {"field_schema": "keyword"}, "missing field `field_name`")
        self.ok("DELETE", c + "/index/city?wait=true")
        self.assertNotIn("city", self.ok("GET", c)["payload_schema"])
        # Dropping the collection drops its declarations.
        self.ok("DELETE", c)
        c = self.coll()
        self.assertEqual(self.ok("GET", c)["payload_schema"], {})


# ---- points ------------------------------------------------------------------------------

class PointsTest(Base):
    def test_upsert_list_and_batch_forms_with_wait(self):
        c = self.coll()
        r1 = self.upsert(c, [{"id": 1, "vector": [1, 0, 0, 0], "payload": {"a": 1}}])
        self.assertEqual(r1["status"], "completed")
        r2 = self.ok("PUT", c + "/points", {"batch": {"ids": [2, 3], "vectors": [[0, 1, 0, 0], [0, 0, 1, 0]],
                                                      "payloads": [{"b": 2}, None]}})
        self.assertEqual(r2["status"], "acknowledged")
        self.assertGreater(r2["operation_id"], r1["operation_id"])
        recs = self.ok("POST", c + "/points", {"ids": [1, 2, 3, 99]})
        self.assertEqual([r["id"] for r in recs], [1, 2, 3])
        self.assertEqual(recs[0], {"id": 1, "payload": {"a": 1}})  # payload yes, vector no
        self.assertEqual(recs[1]["payload"], {"b": 2})
        self.assertEqual(recs[2]["payload"], {})

    def test_retrieve_with_vector_returns_normalised_cosine_vector(self):
        c = self.coll()
        self.upsert(c, [{"id": 5, "vector": [3, 4, 0, 0]}])
        rec = self.ok("POST", c + "/points", {"ids": [5], "with_vector": True, "with_payload": False})[0]
        self.assertNotIn("payload", rec)
        self.assertAlmostEqual(rec["vector"][0], 0.6, places=6)
        self.assertAlmostEqual(rec["vector"][1], 0.8, places=6)

    def test_get_one_point_and_404(self):
        c = self.coll()
        self.upsert(c, [{"id": 7, "vector": [1, 0, 0, 0], "payload": {"k": "v"}}])
        r = self.ok("GET", c + "/points/7")
        self.assertEqual(r["id"], 7)
        self.assertEqual(r["payload"], {"k": "v"})
        self.assertEqual(len(r["vector"]), 4)
        self.err(404, "GET", c + "/points/8", contains="Not found: No point with id 8 found")
        self.err(400, "GET", c + "/points/abc")

    def test_uuid_ids_in_any_form_come_back_canonical(self):
        c = self.coll()
        forms = ["550E8400-E29B-41D4-A716-446655440000", "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
                 "6ba7b8119dad11d180b400c04fd430c8", "urn:uuid:6ba7b812-9dad-11d1-80b4-00c04fd430c8"]
        self.upsert(c, [{"id": f, "vector": [1, 0, 0, i]} for i, f in enumerate(forms)])
        got = sorted(r["id"] for r in self.ok("POST", c + "/points/scroll", {"limit": 10})["points"])
        self.assertEqual(got, ["550e8400-e29b-41d4-a716-446655440000", "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
                               "6ba7b811-9dad-11d1-80b4-00c04fd430c8", "6ba7b812-9dad-11d1-80b4-00c04fd430c8"])
        r = self.ok("GET", c + "/points/550e8400e29b41d4a716446655440000")
        self.assertEqual(r["id"], "550e8400-e29b-41d4-a716-446655440000")

    def test_largest_u64_id_round_trips(self):
        c = self.coll()
        big = 2 ** 64 - 1
        raw = ('{"points":[{"id":%d,"vector":[1,0,0,0]},{"id":%d,"vector":[0,1,0,0]}]}' % (big, 2 ** 63)).encode()
        status, _, body = self.srv.request("PUT", c + "/points?wait=true", raw=raw,
                                           headers={"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        _, _, body = self.srv.request("POST", c + "/points/search", {"vector": [1, 0, 0, 0], "limit": 2})
        self.assertIn(b'"id":18446744073709551615', body)
        self.assertEqual(json.loads(body)["result"][0]["id"], big)
        self.assertEqual(self.ok("GET", c + "/points/%d" % big)["id"], big)
        self.assertEqual(self.ok("GET", c + "/points/%d" % 2 ** 63)["id"], 2 ** 63)
        # has_id names them exactly (the filter is parsed outside the body's parser)
        for want in (big, 2 ** 63):
            raw = ('{"filter":{"must":[{"has_id":[%d]}]},"limit":5}' % want).encode()
            _, _, body = self.srv.request("POST", c + "/points/scroll", raw=raw,
                                          headers={"Content-Type": "application/json"})
            self.assertEqual([p["id"] for p in json.loads(body)["result"]["points"]], [want])
        self.err(400, "PUT", c + "/points", raw=('{"points":[{"id":%d,"vector":[1,0,0,0]}]}' % 2 ** 64).encode())

    def test_bad_ids_are_400(self):
        c = self.coll()
        for bad in (-1, "abc", 1.5, None, [1], {"a": 1}, True):
            self.err(400, "PUT", c + "/points", {"points": [{"id": bad, "vector": [1, 0, 0, 0]}]})
        self.err(400, "POST", c + "/points", {"ids": [1, -1]}, "-1 is not a valid point id")
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 0)

    def test_bad_vectors_are_400_with_qdrant_wording(self):
        c = self.coll()
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": [1, 0, 0]}]},
                 "Wrong input: Vector dimension error: expected dim: 4, got 3")
        self.err(400, "PUT", c + "/points", raw=b'{"points":[{"id":1,"vector":[1,0,0,1e999]}]}',
                 contains="Format error in JSON body")
        self.err(400, "PUT", c + "/points", raw=b'{"points":[{"id":1,"vector":[1,0,0,NaN]}]}',
                 contains="Format error in JSON body")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": [1, 0, 0, 1e39]}]},
                 "out of range")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": "1,0,0,0"}]}, "Format error")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": [1, "0", 0, 0]}]}, "Format error")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": {"named": [1, 0, 0, 0]}}]},
                 "Not existing vector name")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": [1, 0, 0, 0], "payload": [1]}]},
                 "Format error")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1}]}, "missing field `vector`")
        # A bad point rejects the whole batch.
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": [1, 0, 0, 0]},
                                                        {"id": 2, "vector": [1]}]})
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 0)
        # Integers are fine for float fields.
        self.upsert(c, [{"id": 1, "vector": [1, 2, 3, 4]}])

    def test_malformed_bodies_are_400(self):
        c = self.coll()
        self.err(400, "PUT", c + "/points", raw=b"", contains="EOF while parsing")
        self.err(400, "PUT", c + "/points", raw=b"{", contains="Format error in JSON body")
        self.err(400, "PUT", c + "/points", raw=b"[]", contains="Format error in JSON body")
        self.err(400, "PUT", c + "/points", raw=b'{"points":[],"points":[]}', contains="duplicate")
        self.err(400, "PUT", c + "/points", raw=b'{"points":["\\u0001x"]}', contains="U+0001")
        self.err(400, "PUT", c + "/points?wait=maybe", {"points": []}, None)

    def test_upsert_replaces_payload_and_vector(self):
        c = self.coll(distance="Dot")
        self.upsert(c, [{"id": 1, "vector": [1, 0, 0, 0], "payload": {"a": 1, "b": 2}}])
        self.upsert(c, [{"id": 1, "vector": [0, 2, 0, 0], "payload": {"c": 3}}])
        r = self.ok("GET", c + "/points/1")
        self.assertEqual(r["payload"], {"c": 3})
        self.assertEqual(r["vector"], [0, 2, 0, 0])

    def test_payload_round_trips_exactly(self):
        c = self.coll()
        p = {"s": "ünïcødé ✓ \"q\" \\ \n", "i": -5, "f": 0.1, "f1": 1.0, "big": 9007199254740993,
             "n": None, "t": True, "arr": [1, [2, {"x": []}]], "o": {"deep": {"er": 1.5e-300}}}
        self.upsert(c, [{"id": 1, "vector": [1, 0, 0, 0], "payload": p}])
        _, _, body = self.srv.request("GET", c + "/points/1")
        got = json.loads(body)["result"]["payload"]
        self.assertEqual(got, p)
        self.assertIsInstance(got["f1"], float)  # 1.0 stays a float
        self.assertIn(b'"f":0.1', body)

    def test_delete_by_ids_and_by_filter(self):
        c = self.coll()
        self.upsert(c, [{"id": i, "vector": [1, 0, 0, i], "payload": {"even": i % 2 == 0}} for i in range(10)])
        r = self.ok("POST", c + "/points/delete?wait=true", {"points": [0, 1, 42]})
        self.assertEqual(r["status"], "completed")
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 8)
        # [engine filters]
        self.ok("POST", c + "/points/delete", {"filter": {"must": [{"key": "even", "match": {"value": True}}]}})
        ids = [p["id"] for p in self.ok("POST", c + "/points/scroll", {"limit": 100})["points"]]
        self.assertEqual(ids, [3, 5, 7, 9])
        self.err(400, "POST", c + "/points/delete", {}, "expected `points`")

    def test_payload_set_overwrite_delete_clear(self):  # [engine filters]
        c = self.coll()
        self.upsert(c, [{"id": i, "vector": [1, 0, 0, i], "payload": {"a": i, "keep": "k"}} for i in range(4)])
        self.ok("POST", c + "/points/payload?wait=true", {"points": [0, 1], "payload": {"a": 100, "new": [1]}})
        self.assertEqual(self.ok("GET", c + "/points/0")["payload"], {"a": 100, "keep": "k", "new": [1]})
        self.ok("POST", c + "/points/payload", {"points": [0], "payload": {"new": None}})
        self.assertEqual(self.ok("GET", c + "/points/0")["payload"], {"a": 100, "keep": "k"})
        self.ok("POST", c + "/points/payload", {"points": [3], "payload": {"z": 1}, "key": "nest.ed"})
        self.assertEqual(self.ok("GET", c + "/points/3")["payload"]["nest"], {"ed": {"z": 1}})
        self.ok("PUT", c + "/points/payload", {"points": [1], "payload": {"only": True}})
        self.assertEqual(self.ok("GET", c + "/points/1")["payload"], {"only": True})
        self.ok("POST", c + "/points/payload/delete", {"points": [0], "keys": ["keep"]})
        self.assertEqual(self.ok("GET", c + "/points/0")["payload"], {"a": 100})
        self.ok("POST", c + "/points/payload", {"filter": {"must": [{"key": "a", "match": {"value": 2}}]},
                                                "payload": {"tag": "two"}})
        self.assertEqual(self.ok("GET", c + "/points/2")["payload"]["tag"], "two")
        self.ok("POST", c + "/points/payload/clear", {"points": [2]})
        self.assertEqual(self.ok("GET", c + "/points/2")["payload"], {})
        self.err(400, "POST", c + "/points/payload", {"points": [0], "payload": [1]})
        self.err(400, "POST", c + "/points/payload/delete", {"points": [0]}, "missing field `keys`")
        self.err(404, "POST", "/collections/nope_pl/points/payload", {"points": [0], "payload": {}})

    def test_update_vectors_keeps_payload(self):
        c = self.coll(distance="Dot")
        self.upsert(c, [{"id": 1, "vector": [1, 0, 0, 0], "payload": {"p": 1}}])
        self.ok("PUT", c + "/points/vectors?wait=true", {"points": [{"id": 1, "vector": [0, 0, 5, 0]}]})
        r = self.ok("GET", c + "/points/1")
        self.assertEqual(r["vector"], [0, 0, 5, 0])
        self.assertEqual(r["payload"], {"p": 1})
        self.err(404, "PUT", c + "/points/vectors", {"points": [{"id": 2, "vector": [0, 0, 5, 0]}]},
                 "No point with id 2 found")

    def test_batch_applies_operations_in_order(self):
        c = self.coll()
        r = self.ok("POST", c + "/points/batch?wait=true", {"operations": [
            {"upsert": {"points": [{"id": 1, "vector": [1, 0, 0, 0]}, {"id": 2, "vector": [0, 1, 0, 0]}]}},
            {"delete": {"points": [2]}},
            {"overwrite_payload": {"points": [1], "payload": {"x": 1}}},
        ]})
        self.assertEqual([x["status"] for x in r], ["completed"] * 3)
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 1)
        self.assertEqual(self.ok("GET", c + "/points/1")["payload"], {"x": 1})
        self.err(400, "POST", c + "/points/batch", {"operations": [{"explode": {}}]}, "unknown variant")


# ---- search, query, recommend, scroll, count ----------------------------------------

def l2(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def l1(a, b):
    return sum(abs(x - y) for x, y in zip(a, b))


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def cos(a, b):
    return dot(a, b) / math.sqrt(dot(a, a) * dot(b, b))


_rng = __import__("random").Random(7)  # fixed seed
VECS = {i: [round(_rng.uniform(-1, 1), 4) for d in range(4)] for i in range(1, 21)}


class SearchTest(Base):
    def seeded(self, distance):
        c = self.coll(self._testMethodName + "_" + distance, distance=distance)
        self.upsert(c, [{"id": i, "vector": v, "payload": {"i": i, "grp": "a" if i <= 10 else "b",
                                                           "nest": {"x": i, "y": -i}}}
                        for i, v in VECS.items()])
        return c

    def test_scores_follow_each_distance_convention(self):
        q = [0.3, -0.2, 0.9, 0.1]
        for dist, fn, desc in (("Cosine", cos, True), ("Dot", dot, True),
                               ("Euclid", l2, False), ("Manhattan", l1, False)):
            c = self.seeded(dist)
            res = self.ok("POST", c + "/points/search", {"vector": q, "limit": 20})
            self.assertEqual(len(res), 20)
            want = sorted(VECS, key=lambda i: fn(VECS[i], q), reverse=desc)
            self.assertEqual([r["id"] for r in res], want, dist)
            for r in res:
                self.assertAlmostEqual(r["score"], fn(VECS[r["id"]], q), places=4)
                self.assertEqual(r["version"], 0)
                self.assertNotIn("payload", r)
                self.assertNotIn("vector", r)
            self_hit = self.ok("POST", c + "/points/search", {"vector": VECS[4], "limit": 1})[0]
            self.assertEqual(self_hit["id"], 4)
            if dist == "Cosine":
                self.assertAlmostEqual(self_hit["score"], 1.0, places=5)
            if dist in ("Euclid", "Manhattan"):
                self.assertAlmostEqual(self_hit["score"], 0.0, places=5)

    def test_search_offset_threshold_and_selectors(self):
        c = self.seeded("Euclid")
        q = VECS[1]
        full = self.ok("POST", c + "/points/search", {"vector": q, "limit": 10})
        page = self.ok("POST", c + "/points/search", {"vector": q, "limit": 3, "offset": 2})
        self.assertEqual([r["id"] for r in page], [r["id"] for r in full[2:5]])
        t = full[4]["score"]
        under = self.ok("POST", c + "/points/search", {"vector": q, "limit": 10, "score_threshold": t})
        self.assertTrue(all(r["score"] < t for r in under))
        self.assertEqual(len(under), 4)
        r = self.ok("POST", c + "/points/search", {"vector": q, "limit": 1, "with_payload": ["i", "nest.x"],
                                                   "with_vector": True})[0]
        self.assertEqual(r["payload"], {"i": 1, "nest": {"x": 1}})
        self.assertEqual(len(r["vector"]), 4)
        r = self.ok("POST", c + "/points/search", {"vector": q, "limit": 1,
                                                   "with_payload": {"exclude": ["nest.y", "grp"]}})[0]
        self.assertEqual(r["payload"], {"i": 1, "nest": {"x": 1}})
        r = self.ok("POST", c + "/points/search", {"vector": q, "limit": 1,
                                                   "with_payload": {"include": ["grp"]}})[0]
        self.assertEqual(r["payload"], {"grp": "a"})
        self.err(422, "POST", c + "/points/search", {"vector": q, "limit": 0}, "limit")
        self.err(400, "POST", c + "/points/search", {"vector": q}, "missing field `limit`")
        self.err(400, "POST", c + "/points/search", {"vector": q, "limit": 1, "with_payload": 5})
        self.assertEqual(len(self.ok("POST", c + "/points/search", {"vector": q, "top": 2})), 2)

    def test_search_with_filter(self):  # [engine filters]
        c = self.seeded("Dot")
        res = self.ok("POST", c + "/points/search", {
            "vector": [1, 1, 1, 1], "limit": 20, "with_payload": True,
            "filter": {"must": [{"key": "grp", "match": {"value": "b"}}],
                       "must_not": [{"key": "i", "range": {"gte": 18}}]}})
        self.assertEqual(sorted(r["id"] for r in res), list(range(11, 18)))
        self.err(400, "POST", c + "/points/search", {"vector": [1, 1, 1, 1], "limit": 3, "filter": 7})

    def test_search_batch(self):
        c = self.seeded("Cosine")
        res = self.ok("POST", c + "/points/search/batch", {"searches": [
            {"vector": VECS[2], "limit": 1}, {"vector": VECS[9], "limit": 2, "with_payload": True}]})
        self.assertEqual(len(res), 2)
        self.assertEqual(res[0][0]["id"], 2)
        self.assertEqual(res[1][0]["id"], 9)
        self.assertEqual(res[1][0]["payload"]["i"], 9)
        self.err(400, "POST", c + "/points/search/batch", {"searches": [{"vector": [1], "limit": 1}]},
                 "Vector dimension error")

    def test_query_vector_nearest_and_by_id(self):
        c = self.seeded("Euclid")
        a = self.ok("POST", c + "/points/query", {"query": VECS[3], "limit": 4})["points"]
        b = self.ok("POST", c + "/points/query", {"query": {"nearest": VECS[3]}, "limit": 4})["points"]
        self.assertEqual(a, b)
        self.assertEqual(a[0]["id"], 3)
        by_id = self.ok("POST", c + "/points/query", {"query": 3, "limit": 3, "with_payload": True})["points"]
        self.assertEqual([p["id"] for p in by_id], [p["id"] for p in a[1:4]])  # 3 itself excluded
        self.assertEqual(by_id[0]["payload"]["i"], by_id[0]["id"])
        self.assertEqual(len(self.ok("POST", c + "/points/query", {"query": VECS[3]})["points"]), 10)
        self.err(404, "POST", c + "/points/query", {"query": 999}, "No point with id 999 found")
        self.err(400, "POST", c + "/points/query", {"query": VECS[3], "using": "text"}, "vector name")

    def test_query_without_query_is_id_order(self):
        c = self.seeded("Dot")
        pts = self.ok("POST", c + "/points/query", {"limit": 5, "offset": 2})["points"]
        self.assertEqual([p["id"] for p in pts], [3, 4, 5, 6, 7])
        self.assertTrue(all(p["score"] == 0 for p in pts))

    def test_query_prefetch_rrf_matches_the_formula(self):
        c = self.seeded("Dot")
        qa, qb = [1, 0, 0, 0], [0, 0, 1, 1]
        la = [p["id"] for p in self.ok("POST", c + "/points/query", {"query": qa, "limit": 6})["points"]]
        lb = [p["id"] for p in self.ok("POST", c + "/points/query", {"query": qb, "limit": 6})["points"]]
        for k, query in ((2, {"fusion": "rrf"}), (5, {"rrf": {"k": 5}})):
            want = {}
            for lst in (la, lb):
                for pos, i in enumerate(lst):
                    want[i] = want.get(i, 0) + 1.0 / (pos + k)
            res = self.ok("POST", c + "/points/query", {
                "prefetch": [{"query": qa, "limit": 6}, {"query": qb, "limit": 6}],
                "query": query, "limit": 20})["points"]
            self.assertEqual(sorted(p["id"] for p in res), sorted(want))
            for p in res:
                self.assertAlmostEqual(p["score"], want[p["id"]], places=6)
            scores = [p["score"] for p in res]
            self.assertEqual(scores, sorted(scores, reverse=True))
        self.err(400, "POST", c + "/points/query", {"query": {"fusion": "rrf"}}, "prefetch")

    def test_query_prefetch_rescored_by_vector_and_dbsf(self):
        c = self.seeded("Cosine")
        pre = self.ok("POST", c + "/points/query", {"query": VECS[7], "limit": 5})["points"]
        res = self.ok("POST", c + "/points/query", {"prefetch": {"query": VECS[7], "limit": 5},
                                                    "query": VECS[12], "limit": 10})["points"]
        self.assertEqual(sorted(p["id"] for p in res), sorted(p["id"] for p in pre))
        for p in res:
            self.assertAlmostEqual(p["score"], cos(VECS[p["id"]], VECS[12]), places=5)
        d = self.ok("POST", c + "/points/query", {"prefetch": [{"query": VECS[1], "limit": 4},
                                                               {"query": VECS[2], "limit": 4}],
                                                  "query": {"fusion": "dbsf"}})["points"]
        self.assertTrue(all(0 <= p["score"] <= 2.0 for p in d))
        self.assertGreaterEqual(len(d), 4)

    def test_recommend_average_vector_excludes_examples(self):
        c = self.seeded("Dot")
        pos, neg = [2, 5], [9]
        avg = [(VECS[2][d] + VECS[5][d]) / 2 for d in range(4)]
        target = [2 * avg[d] - VECS[9][d] for d in range(4)]
        want = [i for i in sorted(VECS, key=lambda i: dot(VECS[i], target), reverse=True)
                if i not in (2, 5, 9)][:5]
        res = self.ok("POST", c + "/points/recommend", {"positive": pos, "negative": neg, "limit": 5})
        self.assertEqual([r["id"] for r in res], want)
        for r in res:
            self.assertAlmostEqual(r["score"], dot(VECS[r["id"]], target), places=4)
        q = self.ok("POST", c + "/points/query", {"query": {"recommend": {"positive": pos, "negative": neg}},
                                                  "limit": 5})["points"]
        self.assertEqual([p["id"] for p in q], want)
        self.err(400, "POST", c + "/points/recommend", {"positive": [], "limit": 5}, "Positive")
        self.err(404, "POST", c + "/points/recommend", {"positive": [404], "limit": 5})
        self.err(400, "POST", c + "/points/recommend", {"positive": [1], "limit": 5, "strategy": "best_score"})

    def test_scroll_pages_in_id_order(self):
        c = self.coll()
        ids = list(range(100, 125))
        self.upsert(c, [{"id": i, "vector": [1, 0, 0, i], "payload": {"i": i}} for i in reversed(ids)])
        seen, offset = [], None
        while True:
            body = {"limit": 10}
            if offset is not None:
                body["offset"] = offset
            page = self.ok("POST", c + "/points/scroll", body)
            seen += [p["id"] for p in page["points"]]
            self.assertTrue(all("payload" in p and "vector" not in p for p in page["points"]))
            offset = page["next_page_offset"]
            if offset is None:
                break
            self.assertEqual(offset, seen[-1] + 1)
        self.assertEqual(seen, ids)
        page = self.ok("POST", c + "/points/scroll", {"offset": 120, "limit": 100, "with_payload": False,
                                                      "with_vector": True})
        self.assertEqual([p["id"] for p in page["points"]], list(range(120, 125)))
        self.assertTrue(all("payload" not in p and len(p["vector"]) == 4 for p in page["points"]))
        self.err(400, "POST", c + "/points/scroll", {"offset": -3})

    def test_scroll_and_count_with_filter(self):  # [engine filters]
        c = self.seeded("Dot")
        page = self.ok("POST", c + "/points/scroll", {"limit": 3, "filter": {"must": [
            {"key": "grp", "match": {"value": "b"}}]}})
        self.assertEqual([p["id"] for p in page["points"]], [11, 12, 13])
        self.assertEqual(page["next_page_offset"], 14)
        self.assertEqual(self.ok("POST", c + "/points/count", {"filter": {"should": [
            {"key": "i", "range": {"lt": 3}}, {"key": "i", "match": {"any": [7, 8]}}]}})["count"], 4)
        self.assertEqual(self.ok("POST", c + "/points/count", {"exact": True})["count"], 20)
        self.err(400, "POST", c + "/points/count", {"filter": {"must": [{"nonsense": 1}]}}, "Format error")


# ---- auth ------------------------------------------------------------------------------

class AuthTest(Base):
    server_args = ("--api-key", "secret-key", "--read-only-api-key", "reader-key")

    def test_missing_or_bad_key_is_401_plain_text(self):
        status, h, body = self.srv.request("GET", "/collections")
        self.assertEqual(status, 401)
        self.assertIn(b"Must provide an API key", body)
        status, _, _ = self.srv.request("GET", "/collections", headers={"api-key": "nope"})
        self.assertEqual(status, 401)
        status, _, _ = self.srv.request("GET", "/metrics")
        self.assertEqual(status, 401)

    def test_probes_and_root_need_no_key(self):
        for p in ("/", "/healthz", "/livez", "/readyz"):
            self.assertEqual(self.srv.request("GET", p)[0], 200, p)

    def test_full_key_by_header_or_bearer(self):
        k = {"api-key": "secret-key"}
        self.assertEqual(self.srv.request("PUT", "/collections/authc", {"vectors": {"size": 2, "distance": "Dot"}},
                                          headers=k)[0], 200)
        self.assertEqual(self.srv.request("GET", "/collections",
                                          headers={"Authorization": "Bearer secret-key"})[0], 200)
        self.assertEqual(self.srv.request("GET", "/collections",
                                          headers={"Authorization": "Bearer wrong"})[0], 401)

    def test_read_only_key_reads_but_cannot_write(self):
        full, ro = {"api-key": "secret-key"}, {"api-key": "reader-key"}
        self.srv.request("PUT", "/collections/roc", {"vectors": {"size": 2, "distance": "Dot"}}, headers=full)
        self.assertEqual(self.srv.request("GET", "/collections/roc", headers=ro)[0], 200)
        self.assertEqual(self.srv.request("POST", "/collections/roc/points/search",
                                          {"vector": [1, 0], "limit": 1}, headers=ro)[0], 200)
        status, _, body = self.srv.request("PUT", "/collections/roc/points",
                                           {"points": [{"id": 1, "vector": [1, 0]}]}, headers=ro)
        self.assertEqual(status, 403)
        self.assertIn("error", json.loads(body)["status"])
        self.assertEqual(self.srv.request("DELETE", "/collections/roc", headers=ro)[0], 403)
        self.assertEqual(self.srv.request("GET", "/collections/roc/exists", headers=full)[0], 200)


# ---- body limit --------------------------------------------------------------------------

class BodyLimitTest(Base):
    server_args = ("--max-body-bytes", "65536")

    def test_oversize_body_is_413_and_server_keeps_serving(self):
        c = self.coll(size=2, distance="Dot")
        pts = [{"id": i, "vector": [1, i]} for i in range(6000)]
        status, _, body = self.srv.request("PUT", c + "/points", {"points": pts})
        self.assertEqual(status, 413, body)
        r = json.loads(body)
        self.assertIn("larger than allowed", r["status"]["error"])
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 0)
        self.upsert(c, pts[:100])
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 100)

    def test_malformed_requests_never_crash_the_server(self):
        c = self.coll(size=2, distance="Dot")
        bodies = [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"points":5}', b'{"points":[null]}',
                  b'{"filter":{"must":[{"key":1}]}}', b"[" * 5000 + b"]" * 5000,
                  b'{"vector":{"name":"x","vector":{"indices":[1],"values":[1]}},"limit":1}',
                  b'{"query":{"fusion":"none"}}', b'{"prefetch":[{"prefetch":{"prefetch":{}}}],"query":{"rrf":{"k":0}}}',
                  b'{"searches":[1,2]}', b'{"operations":[{"upsert":{"batch":{"ids":[1],"vectors":[[1]]}}}]}',
                  b'{"ids":"x"}', b'{"positive":[[1,2],[1e40,1]],"limit":1}', b'{"limit":99999999999999999999999}',
                  b'{"offset":{"a":1},"limit":-1}', b'{"with_payload":{"include":[1]}}']
        paths = [("PUT", "/points"), ("POST", "/points"), ("POST", "/points/search"), ("POST", "/points/query"),
                 ("POST", "/points/scroll"), ("POST", "/points/count"), ("POST", "/points/delete"),
                 ("POST", "/points/recommend"), ("POST", "/points/search/batch"), ("POST", "/points/batch"),
                 ("POST", "/points/payload"), ("PUT", "/points/vectors"), ("PUT", "/index"), ("PATCH", ""),
                 ("POST", "/points/vectors/delete"), ("PUT", "/snapshots/recover"),
                 ("POST", "/snapshots/upload"), ("POST", "/snapshots")]
        for m, p in paths:
            for b in bodies:
                status, _, out = self.srv.request(m, c + p, raw=b)
                self.assertTrue(400 <= status < 500 or status == 200, (m, p, b[:40], status, out[:200]))
        self.assertEqual(self.srv.request("GET", "/readyz")[0], 200)


# ---- process lifecycle ------------------------------------------------------------------

class LifecycleTest(unittest.TestCase):
    def start(self, **kw):
        s = Server(**kw)
        self.addCleanup(s.cleanup)
        return s.start()

    def test_sigterm_exits_0_and_data_survives_restart(self):
        s = self.start()
        s.call("PUT", "/collections/p", {"vectors": {"size": 3, "distance": "Euclid"}})
        status, r = s.call("PUT", "/collections/p/points",
                           {"points": [{"id": i, "vector": [i, 0, 1], "payload": {"i": i}} for i in range(50)]})
        self.assertEqual(status, 200, r)
        self.assertEqual(s.stop(), 0, s.stderr())
        assert_sanitizer_clean(self, s)
        s2 = Server(data_dir=s.data_dir)
        self.addCleanup(s2.cleanup)
        s2.start()
        status, r = s2.call("POST", "/collections/p/points/count", {})
        self.assertEqual(r["result"]["count"], 50)
        status, r = s2.call("GET", "/collections/p/points/49")
        self.assertEqual(r["result"]["payload"], {"i": 49})
        self.assertEqual(s2.stop(), 0)

    def test_kill_9_keeps_acknowledged_writes(self):
        s = self.start()
        s.call("PUT", "/collections/k", {"vectors": {"size": 2, "distance": "Dot"}})
        for i in range(20):
            status, r = s.call("PUT", "/collections/k/points?wait=true",
                               {"points": [{"id": i, "vector": [1, i], "payload": {"n": i}}]})
            self.assertEqual(r["result"]["status"], "completed")
        s.stop(signal.SIGKILL)
        s2 = Server(data_dir=s.data_dir)
        self.addCleanup(s2.cleanup)
        s2.start()
        status, r = s2.call("POST", "/collections/k/points/scroll", {"limit": 100})
        self.assertEqual([p["id"] for p in r["result"]["points"]], list(range(20)))
        self.assertEqual(s2.stop(), 0)

    def test_ready_line_names_address_and_data_dir(self):
        s = self.start()
        self.assertIn("listening on http://127.0.0.1:%d (data: %s)" % (s.port, s.data_dir), s.stderr())

    def test_non_loopback_host_without_key_is_refused(self):
        d = tempfile.mkdtemp(prefix="qv-srv-")
        self.addCleanup(lambda: __import__("shutil").rmtree(d, ignore_errors=True))
        p = subprocess.run(server_command() + ["--host", "0.0.0.0", "--port", str(free_port()),
                                               "--data-dir", d], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"refusing to listen on 0.0.0.0 without an API key", p.stderr)

    def test_usage_errors_exit_2(self):
        for args in (["--port", "abc"], ["--port", "70000"], ["--bogus"], ["--log-level", "loud"],
                     ["--read-only-api-key", "r"]):
            p = subprocess.run(server_command() + args, capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
        p = subprocess.run(server_command() + ["--help"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"QUIVER__SERVICE__HTTP_PORT", p.stdout)

    def test_config_file_env_and_flag_precedence(self):
        file_port, env_port = free_port(), free_port()
        d = tempfile.mkdtemp(prefix="qv-srv-")
        cfg = os.path.join(d, "config.yaml")
        with open(cfg, "w") as f:
            f.write("# comment\nservice:\n  host: 127.0.0.1\n  http_port: %d  # the file's\n"
                    "  api_key: \"from-file\"\n  unknown_thing: 1\nstorage:\n  storage_path: %s\n"
                    % (file_port, os.path.join(d, "data")))
        # env beats the file for the port; the file still gives the key.
        s = Server(data_dir=os.path.join(d, "data"), args=["--config", cfg],
                   env={"QUIVER__SERVICE__HTTP_PORT": str(env_port)}, port=env_port)
        self.addCleanup(s.cleanup)
        self.addCleanup(lambda: __import__("shutil").rmtree(d, ignore_errors=True))
        s.start()
        self.assertEqual(s.request("GET", "/collections")[0], 401)
        self.assertEqual(s.request("GET", "/collections", headers={"api-key": "from-file"})[0], 200)
        self.assertIn("ignoring unknown setting \"service.unknown_thing\"", s.stderr())
        self.assertEqual(s.stop(), 0)
        # A flag beats the environment (qvserver passes --port).
        s = Server(data_dir=os.path.join(d, "data"), env={"QUIVER__SERVICE__HTTP_PORT": "1"})
        self.addCleanup(s.cleanup)
        s.start()
        self.assertEqual(s.stop(), 0)

    def test_second_server_on_the_same_data_dir_fails(self):
        s = self.start()
        p = subprocess.run(server_command() + ["--port", str(free_port()), "--data-dir", s.data_dir],
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"cannot open --data-dir", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
