#!/usr/bin/env python3
"""test_http_vectors.py: named vectors over HTTP (create, info, upsert in both
forms, search / query / recommend with a vector name, with_vector selectors,
vector updates and deletes, Qdrant's error wording) and float32 round trips
through the fast body parser (src/server/json_scan.c).

Run by test_http.py under CTest (`server_http`), or alone:
`python3 tests/server/test_http_vectors.py` with QV_TEST_BIN / QV_CLI set.
"""
import json
import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qvserver import Base  # noqa: E402


def f32(x):
    """x rounded to float32, as a Python float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_bits(x):
    return struct.pack("<f", x)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def norm(a):
    n = dot(a, a) ** 0.5
    return [x / n for x in a]


IMG = {1: [1, 0, 0, 0], 2: [0, 2, 0, 0], 3: [1, 1, 0, 0], 4: [0, 0, 3, 1], 5: [2, 0, 1, 0]}
TXT = {1: [0, 1, 0], 2: [1, 0, 0], 3: [0, 0, 1], 6: [1, 1, 1]}


class NamedVectorsTest(Base):
    def named(self, name=None, extra=None):
        name = name or self._testMethodName
        self.call("DELETE", "/collections/" + name)
        vectors = {"img": {"size": 4, "distance": "Dot", "hnsw_config": {"m": 8}},
                   "txt": {"size": 3, "distance": "Cosine", "on_disk": True}}
        vectors.update(extra or {})
        self.assertIs(self.ok("PUT", "/collections/" + name, {"vectors": vectors}), True)
        return "/collections/" + name

    def seeded(self):
        c = self.named()
        pts = []
        for i in sorted(set(IMG) | set(TXT)):
            v = {}
            if i in IMG:
                v["img"] = IMG[i]
            if i in TXT:
                v["txt"] = TXT[i]
            pts.append({"id": i, "vector": v, "payload": {"i": i}})
        self.upsert(c, pts)
        return c

    def test_create_and_info_keep_the_named_shape(self):
        c = self.named()
        info = self.ok("GET", c)
        self.assertEqual(info["config"]["params"]["vectors"], {
            "img": {"size": 4, "distance": "Dot", "hnsw_config": {"m": 8}},
            "txt": {"size": 3, "distance": "Cosine", "on_disk": True}})
        mixed = self.named(self._testMethodName + "_mixed", {"": {"size": 2, "distance": "Euclid"}})
        vecs = self.ok("GET", mixed)["config"]["params"]["vectors"]
        self.assertEqual(vecs[""], {"size": 2, "distance": "Euclid"})
        self.assertEqual(set(vecs), {"", "img", "txt"})

    def test_create_rejects_bad_named_configs(self):
        p = "/collections/badnamed"
        self.err(400, "PUT", p, {"vectors": {"a/b": {"size": 4, "distance": "Dot"}}})
        self.err(400, "PUT", p, {"vectors": {"a": {"size": 4, "distance": "Dottt"}}}, "unknown variant")
        self.err(400, "PUT", p, {"vectors": {"a": {"size": 0, "distance": "Dot"}}}, "Format error")
        self.err(400, "PUT", p, {"vectors": {"a": {"distance": "Dot"}}}, "missing field `size`")
        self.err(400, "PUT", p, {"vectors": {"a": 4}}, "Format error")
        self.err(400, "PUT", p, {"vectors": {}}, "Format error")
        self.err(400, "PUT", p, {"vectors": {"v%d" % i: {"size": 2, "distance": "Dot"} for i in range(17)}},
                 "at most 16")
        self.assertEqual(self.ok("GET", p + "/exists"), {"exists": False})

    def test_points_carry_any_subset_and_with_vector_selects(self):
        c = self.seeded()
        recs = self.ok("POST", c + "/points", {"ids": [1, 4, 6], "with_vector": True})
        self.assertEqual(recs[0]["vector"]["img"], IMG[1])
        self.assertEqual(set(recs[0]["vector"]), {"img", "txt"})
        self.assertEqual(recs[1]["vector"], {"img": IMG[4]})
        self.assertEqual(set(recs[2]["vector"]), {"txt"})
        for a, b in zip(recs[2]["vector"]["txt"], norm(TXT[6])):  # Cosine: stored normalised
            self.assertAlmostEqual(a, b, places=6)
        only = self.ok("POST", c + "/points", {"ids": [1, 4], "with_vector": ["img"]})
        self.assertEqual([r["vector"] for r in only], [{"img": IMG[1]}, {"img": IMG[4]}])
        self.assertEqual(self.ok("POST", c + "/points", {"ids": [4], "with_vector": ["txt"]})[0]["vector"], {})
        none = self.ok("POST", c + "/points", {"ids": [1], "with_vector": []})[0]
        self.assertNotIn("vector", none)
        self.assertEqual(set(self.ok("GET", c + "/points/1")["vector"]), {"img", "txt"})
        page = self.ok("POST", c + "/points/scroll", {"limit": 2, "with_vector": ["txt"]})["points"]
        self.assertEqual([set(p["vector"]) for p in page], [{"txt"}, {"txt"}])

    def test_has_vector_filter_knows_named_vectors(self):
        c = self.seeded()
        def ids(flt):
            pts = self.ok("POST", c + "/points/scroll", {"limit": 100, "filter": flt})["points"]
            return sorted(p["id"] for p in pts)
        with_img = sorted(IMG)
        with_txt = sorted(TXT)
        self.assertEqual(ids({"must": [{"has_vector": "img"}]}), with_img)
        self.assertEqual(ids({"must": [{"has_vector": "txt"}]}), with_txt)
        self.assertEqual(ids({"must_not": [{"has_vector": "img"}]}), sorted(set(TXT) - set(IMG)))
        self.assertEqual(ids({"must": [{"has_vector": "nope"}]}), [])
        self.assertEqual(ids({"must": [{"has_vector": ""}]}), [])  # no unnamed vector here
        n = self.ok("POST", c + "/points/count", {"filter": {"must": [{"has_vector": "img"}]}})["count"]
        self.assertEqual(n, len(IMG))
        # Deleting a point's vector takes it out of has_vector.
        self.ok("POST", c + "/points/vectors/delete?wait=true", {"points": [with_img[0]], "vector": ["img"]})
        self.assertEqual(ids({"must": [{"has_vector": "img"}]}), with_img[1:])
        hits = self.ok("POST", c + "/points/search", {"vector": {"name": "txt", "vector": [1, 0, 0]},
                                                      "limit": 10, "filter": {"must": [{"has_vector": "img"}]}})
        self.assertEqual(sorted(h["id"] for h in hits), sorted(set(with_img[1:]) & set(TXT)))

    def test_batch_form_with_named_lists(self):
        c = self.named()
        self.ok("PUT", c + "/points?wait=true", {"batch": {
            "ids": [10, 11], "vectors": {"img": [[1, 2, 3, 4], [4, 3, 2, 1]], "txt": [[1, 0, 0], [0, 1, 0]]},
            "payloads": [{"a": 1}, {"a": 2}]}})
        r = self.ok("POST", c + "/points", {"ids": [11], "with_vector": ["img"]})[0]
        self.assertEqual(r, {"id": 11, "payload": {"a": 2}, "vector": {"img": [4, 3, 2, 1]}})
        self.err(400, "PUT", c + "/points", {"batch": {"ids": [1, 2], "vectors": {"img": [[1, 2, 3, 4]]}}},
                 "expected a sequence of 2 vectors")
        self.err(400, "PUT", c + "/points", {"batch": {"ids": [1], "vectors": {"nope": [[1, 2, 3, 4]]}}},
                 "Wrong input: Not existing vector name error: nope")

    def test_unknown_names_and_dimensions_use_qdrant_wording(self):
        c = self.seeded()
        msg = "Wrong input: Not existing vector name error: nope"
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": {"nope": [1, 2]}}]}, msg)
        self.err(400, "POST", c + "/points/search", {"vector": {"name": "nope", "vector": [1, 2]}, "limit": 1}, msg)
        self.err(400, "POST", c + "/points/query", {"query": [1, 2], "using": "nope"}, msg)
        self.err(400, "POST", c + "/points/recommend", {"positive": [1], "using": "nope", "limit": 1}, msg)
        self.err(400, "POST", c + "/points/vectors/delete", {"points": [1], "vector": ["nope"]}, msg)
        # A plain array is the unnamed vector "", which this collection lacks.
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": [1, 0, 0, 0]}]},
                 "Wrong input: Not existing vector name error: ")
        self.err(400, "POST", c + "/points/search", {"vector": [1, 0, 0, 0], "limit": 1},
                 "Not existing vector name error")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": {"img": [1, 0, 0]}}]},
                 "Wrong input: Vector dimension error: expected dim: 4, got 3")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": {"img": [[1, 0, 0, 0]]}}]},
                 "multivectors")
        self.err(400, "PUT", c + "/points", {"points": [{"id": 1, "vector": {"img": {"indices": [1], "values": [1]}}}]},
                 "sparse")
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 6)

    def test_search_and_query_use_the_named_space(self):
        c = self.seeded()
        q = [1, 0.5, 0.2, 0]
        res = self.ok("POST", c + "/points/search", {"vector": {"name": "img", "vector": q}, "limit": 10})
        want = sorted(IMG, key=lambda i: dot(IMG[i], q), reverse=True)
        self.assertEqual([r["id"] for r in res], want)  # point 6 has no img vector
        for r in res:
            self.assertAlmostEqual(r["score"], dot(IMG[r["id"]], q), places=5)
        qt = [0.2, 0.9, 0.1]
        pts = self.ok("POST", c + "/points/query", {"query": qt, "using": "txt", "limit": 10,
                                                    "with_vector": ["txt"]})["points"]
        want = sorted(TXT, key=lambda i: dot(norm(TXT[i]), norm(qt)), reverse=True)
        self.assertEqual([p["id"] for p in pts], want)
        self.assertEqual(set(pts[0]["vector"]), {"txt"})
        # A prefetch on one space re-scored on another.
        pts = self.ok("POST", c + "/points/query", {
            "prefetch": {"query": q, "using": "img", "limit": 3}, "query": qt, "using": "txt"})["points"]
        top_img = set(sorted(IMG, key=lambda i: dot(IMG[i], q), reverse=True)[:3])
        self.assertEqual({p["id"] for p in pts}, top_img & set(TXT))

    def test_recommend_and_query_by_id_read_the_named_vector(self):
        c = self.seeded()
        res = self.ok("POST", c + "/points/recommend", {"positive": [3], "using": "img", "limit": 10})
        want = [i for i in sorted(IMG, key=lambda i: dot(IMG[i], IMG[3]), reverse=True) if i != 3]
        self.assertEqual([r["id"] for r in res], want)
        pts = self.ok("POST", c + "/points/query", {"query": 3, "using": "img", "limit": 10})["points"]
        self.assertEqual([p["id"] for p in pts], want)
        pts = self.ok("POST", c + "/points/query", {"query": {"recommend": {"positive": [3]}},
                                                    "using": "img", "limit": 10})["points"]
        self.assertEqual([p["id"] for p in pts], want)
        # Point 6 has no img vector.
        self.err(400, "POST", c + "/points/query", {"query": 6, "using": "img"}, "has no vector")

    def test_update_vectors_replaces_only_the_given_names(self):
        c = self.seeded()
        self.ok("PUT", c + "/points/vectors?wait=true", {"points": [{"id": 1, "vector": {"txt": [0, 0, 2]}}]})
        r = self.ok("GET", c + "/points/1")
        self.assertEqual(r["vector"]["img"], IMG[1])  # Dot: kept exactly
        self.assertEqual(r["vector"]["txt"], [0, 0, 1])  # Cosine: normalised
        self.assertEqual(r["payload"], {"i": 1})
        # A name the point did not have yet is added.
        self.ok("PUT", c + "/points/vectors", {"points": [{"id": 6, "vector": {"img": [9, 9, 9, 9]}}]})
        self.assertEqual(self.ok("GET", c + "/points/6")["vector"]["img"], [9, 9, 9, 9])
        self.err(404, "PUT", c + "/points/vectors", {"points": [{"id": 77, "vector": {"img": [1, 1, 1, 1]}}]})

    def test_delete_vectors_by_ids_and_filter(self):
        c = self.seeded()
        r = self.ok("POST", c + "/points/vectors/delete?wait=true", {"points": [1, 2, 999], "vector": ["txt"]})
        self.assertEqual(r["status"], "completed")
        got = self.ok("POST", c + "/points", {"ids": [1, 2, 3], "with_vector": True})
        self.assertEqual([set(p["vector"]) for p in got], [{"img"}, {"img"}, {"img", "txt"}])
        self.assertEqual(got[0]["payload"], {"i": 1})
        self.ok("POST", c + "/points/vectors/delete", {"filter": {"must": [{"key": "i", "match": {"any": [3, 42]}}]},
                                                       "vector": ["img"]})
        got = self.ok("POST", c + "/points", {"ids": [3], "with_vector": True})
        self.assertEqual(set(got[0]["vector"]), {"txt"})
        # The engine keeps at least one vector per point.
        self.err(400, "POST", c + "/points/vectors/delete", {"points": [1], "vector": ["img"]})
        self.assertEqual(self.ok("GET", c + "/points/1")["vector"], {"img": IMG[1]})
        # Through points/batch as well.
        self.upsert(c, [{"id": 7, "vector": {"img": [1, 1, 1, 1], "txt": [1, 1, 0]}}])
        self.ok("POST", c + "/points/batch", {"operations": [
            {"delete_vectors": {"points": [7], "vector": ["txt"]}}]})
        self.assertEqual(self.ok("GET", c + "/points/7")["vector"], {"img": [1, 1, 1, 1]})

    def test_unnamed_and_named_together(self):
        c = self.named(extra={"": {"size": 2, "distance": "Dot"}})
        self.upsert(c, [{"id": 1, "vector": {"": [1, 2], "img": [1, 0, 0, 0]}},
                        {"id": 2, "vector": [3, 4]}])
        recs = self.ok("POST", c + "/points", {"ids": [1, 2], "with_vector": True})
        self.assertEqual(recs[0]["vector"], {"": [1, 2], "img": [1, 0, 0, 0]})
        self.assertEqual(recs[1]["vector"], [3, 4])  # only the unnamed vector: a plain array
        self.assertEqual(self.ok("POST", c + "/points", {"ids": [1], "with_vector": [""]})[0]["vector"], [1, 2])
        res = self.ok("POST", c + "/points/search", {"vector": [0, 1], "limit": 2})
        self.assertEqual([r["id"] for r in res], [2, 1])
        res = self.ok("POST", c + "/points/search", {"vector": {"name": "img", "vector": [1, 0, 0, 0]}, "limit": 5})
        self.assertEqual([r["id"] for r in res], [1])
        # The engine wants the unnamed vector on every point of such a collection.
        self.err(400, "PUT", c + "/points", {"points": [{"id": 3, "vector": {"img": [1, 0, 0, 0]}}]})


class FloatRoundTripTest(Base):
    # Extremes and classic decimal traps; each must come back as the same float32.
    VALUES = ["1e-45", "3.4028235e38", "-0.0", "0.1", "-3.4028235e38", "1.17549435e-38",
              "0.30000001192092896", "16777217", "7e-46", "0.12345678918552399"]

    def raw_upsert(self, c, text):
        status, _, body = self.srv.request("PUT", c + "/points?wait=true", raw=text.encode(),
                                           headers={"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)

    def check(self, got, want_texts):
        self.assertEqual(len(got), len(want_texts))
        for g, w in zip(got, want_texts):
            self.assertEqual(f32_bits(g), f32_bits(float(w)), (g, w))

    def test_extremes_round_trip_exactly_through_upsert_and_retrieve(self):
        n = len(self.VALUES)
        c = self.coll(size=n, distance="Euclid")
        vec = "[" + ",".join(self.VALUES) + "]"
        self.raw_upsert(c, '{"points":[{"id":1,"vector":%s}]}' % vec)
        self.raw_upsert(c, '{"batch":{"ids":[2],"vectors":[%s]}}' % vec)
        # Spelled so that the fast pass does not recognise the key: jansson's path.
        self.raw_upsert(c, '{"points":[{"id":3,"vect\\u006fr":%s}]}' % vec)
        _, _, body = self.srv.request("POST", c + "/points", {"ids": [1, 2, 3], "with_vector": True})
        recs = json.loads(body)["result"]
        for r in recs:
            self.check(r["vector"], self.VALUES)
            self.assertEqual(str(r["vector"][2]), "-0.0")  # the sign of zero is kept
        # Through a named vector and a search score as well.
        nc = "/collections/" + self._testMethodName + "_named"
        self.call("DELETE", nc)
        self.ok("PUT", nc, {"vectors": {"v": {"size": n, "distance": "Dot"}}})
        self.raw_upsert(nc, '{"points":[{"id":1,"vector":{"v":%s}}]}' % vec)
        got = self.ok("GET", nc + "/points/1")["vector"]["v"]
        self.check(got, self.VALUES)

    def test_fast_and_jansson_paths_agree_on_ordinary_floats(self):
        rng = __import__("random").Random(11)  # fixed seed
        dim = 64
        c = self.coll(size=dim, distance="Euclid")
        rows = [[rng.uniform(-10, 10) * 10 ** rng.randint(-8, 8) for _ in range(dim)] for _ in range(20)]
        fast = {"points": [{"id": i, "vector": v} for i, v in enumerate(rows)]}
        self.upsert(c, fast["points"])
        slow = '{"points":[%s]}' % ",".join('{"id":%d,"vect\\u006fr":%s}' % (100 + i, json.dumps(v))
                                            for i, v in enumerate(rows))
        self.raw_upsert(c, slow)
        got = {r["id"]: r["vector"] for r in self.ok("POST", c + "/points", {
            "ids": list(range(20)) + list(range(100, 120)), "with_vector": True})}
        for i, v in enumerate(rows):
            self.assertEqual([f32_bits(x) for x in got[i]], [f32_bits(x) for x in got[100 + i]])
            self.assertEqual([f32_bits(x) for x in got[i]], [f32_bits(x) for x in v])

    def test_out_of_range_and_malformed_vectors_keep_their_messages(self):
        c = self.coll(size=2, distance="Dot")
        for text in ('{"points":[{"id":1,"vector":[3.4028236e38,1]}]}',
                     '{"batch":{"ids":[1],"vectors":[[1,-1e39]]}}'):
            self.err(400, "PUT", c + "/points", raw=text.encode(), contains="out of range for a 32-bit float")
        self.err(400, "PUT", c + "/points", raw=b'{"points":[{"id":1,"vector":[1,2,]}]}',
                 contains="Format error in JSON body")
        self.err(400, "PUT", c + "/points", raw=b'{"points":[{"id":1,"vector":[1,2]},{"id":2,"vector":[1,',
                 contains="Format error in JSON body")
        self.err(400, "PUT", c + "/points", raw=b'{"points":[{"id":1,"vector":"\\u00020"}]}',
                 contains="U+0002")
        self.err(400, "PUT", c + "/points", raw=b'{"points":[{"id":1,"vector":[1,2,3]}]}',
                 contains="Vector dimension error: expected dim: 2, got 3")
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
