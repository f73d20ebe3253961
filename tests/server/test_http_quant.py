#!/usr/bin/env python3
"""test_http_quant.py: storage and quantization over HTTP — Qdrant's
`quantization_config` (scalar / binary / product, collection level and per
vector), vector `datatype` and `on_disk`, Quiver's `quiver_index` extension
(IVF-Flat / IVF-PQ), the search-time `params.quantization {ignore, rescore,
oversampling}` and `params.nprobe`, and `GET /collections/{c}?memory=true`.

Every form is created, read back, and for the invalid ones refused with a
400 whose message names the field. Segments are sealed for real (small
`optimizers_config.indexing_threshold`, which Quiver reads as the segment
size in points) before the quantized searches, so codes and IVF lists are
what the search walks.

Run by test_http.py under CTest (`server_http`), or alone:
`python3 tests/server/test_http_quant.py` with QV_TEST_BIN / QV_CLI set.
"""
import os
import random
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qvserver import Base  # noqa: E402

# Only the suites are exported to test_http.py's namespace.
__all__ = ["QuantConfigTest", "QuantSearchTest"]

DIM = 16
SEG = 128          # points per sealed segment (indexing_threshold)
N_POINTS = 3 * SEG


def vectors(seed, n=N_POINTS, dim=DIM):
    rng = random.Random(seed)  # fixed seed
    return [[round(rng.uniform(-1, 1), 4) for _ in range(dim)] for _ in range(n)]


class QuantConfigTest(Base):
    def create(self, body, name=None):
        name = name or self._testMethodName
        self.call("DELETE", "/collections/" + name)
        self.assertIs(self.ok("PUT", "/collections/" + name, body), True)
        return "/collections/" + name

    def config(self, path):
        return self.ok("GET", path)["config"]

    def test_every_quantization_form_reads_back(self):
        forms = [
            {"scalar": {"type": "int8"}},
            {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}},
            {"scalar": {"type": "int8", "quantile": 0.5}},
            {"binary": {}},
            {"binary": {"always_ram": True, "encoding": "one_bit"}},
            {"binary": {"encoding": "two_bits"}},
            {"product": {"compression": "x4"}},
            {"product": {"compression": "x16", "always_ram": True}},
            {"product": {"compression": "x64"}},
        ]
        for i, q in enumerate(forms):
            with self.subTest(q=q):
                c = self.create({"vectors": {"size": DIM, "distance": "Euclid"},
                                 "quantization_config": q}, "qform_%d" % i)
                self.assertEqual(self.config(c)["quantization_config"], q)

    def test_no_quantization_reads_back_as_null(self):
        c = self.create({"vectors": {"size": 4, "distance": "Dot"}})
        self.assertIsNone(self.config(c)["quantization_config"])

    def test_one_and_half_bits_is_its_own_encoding(self):
        c = self.create({"vectors": {"size": DIM, "distance": "Dot"},
                         "quantization_config": {"binary": {"encoding": "one_and_half_bits",
                                                            "query_encoding": "default"}}})
        self.assertEqual(self.config(c)["quantization_config"],
                         {"binary": {"encoding": "one_and_half_bits"}})

    def test_vector_level_quantization_of_the_unnamed_vector_reads_back(self):
        q = {"product": {"compression": "x8"}}
        c = self.create({"vectors": {"size": DIM, "distance": "Euclid", "quantization_config": q}})
        # The unnamed vector's own setting and the collection level are one
        # setting in Quiver; it reads back at the collection level.
        self.assertEqual(self.config(c)["quantization_config"], q)

    def test_datatypes_and_on_disk_read_back(self):
        for dt in ("float16", "uint8"):
            with self.subTest(datatype=dt):
                c = self.create({"vectors": {"size": 4, "distance": "Dot", "datatype": dt,
                                             "on_disk": True}}, "dt_" + dt)
                self.assertEqual(self.config(c)["params"]["vectors"],
                                 {"size": 4, "distance": "Dot", "datatype": dt, "on_disk": True})
        c = self.create({"vectors": {"size": 4, "distance": "Dot", "datatype": "float32",
                                     "on_disk": False}}, "dt_float32")
        self.assertEqual(self.config(c)["params"]["vectors"], {"size": 4, "distance": "Dot"})

    def test_named_vectors_inherit_the_collection_quantization(self):
        own = {"binary": {"encoding": "two_bits"}}
        coll = {"scalar": {"type": "int8", "quantile": 0.95}}
        c = self.create({"vectors": {"a": {"size": 8, "distance": "Dot", "quantization_config": own,
                                           "datatype": "float16"},
                                     "b": {"size": 4, "distance": "Euclid", "on_disk": True}},
                         "quantization_config": coll})
        cfg = self.config(c)
        self.assertEqual(cfg["quantization_config"], coll)
        self.assertEqual(cfg["params"]["vectors"]["a"],
                         {"size": 8, "distance": "Dot", "datatype": "float16",
                          "quantization_config": own})
        # b has none of its own: it inherits, and says nothing
        self.assertEqual(cfg["params"]["vectors"]["b"],
                         {"size": 4, "distance": "Euclid", "on_disk": True})

    def test_quiver_index_extension_reads_back(self):
        c = self.create({"vectors": {"flat": {"size": 8, "distance": "Euclid",
                                              "quiver_index": {"type": "ivf_flat", "nlist": 32}},
                                     "pq": {"size": 8, "distance": "Dot",
                                            "quiver_index": {"type": "ivf_pq",
                                                             "compression": "x8"}},
                                     "graph": {"size": 8, "distance": "Dot"}}})
        v = self.config(c)["params"]["vectors"]
        self.assertEqual(v["flat"]["quiver_index"], {"type": "ivf_flat", "nlist": 32})
        self.assertEqual(v["pq"]["quiver_index"], {"type": "ivf_pq", "compression": "x8"})
        self.assertNotIn("quiver_index", v["graph"])
        # the collection level applies to every vector without its own
        c = self.create({"vectors": {"size": 8, "distance": "Euclid"},
                         "quiver_index": {"type": "ivf-pq", "nlist": 8}}, "qi_coll")
        self.assertEqual(self.config(c)["params"]["vectors"]["quiver_index"],
                         {"type": "ivf_pq", "nlist": 8})

    def test_collection_product_codes_size_a_vectors_ivf_pq(self):
        c = self.create({"vectors": {"v": {"size": 8, "distance": "Euclid",
                                           "quiver_index": {"type": "ivf_pq"}},
                                     "w": {"size": 8, "distance": "Euclid"}},
                         "quantization_config": {"product": {"compression": "x32"}}})
        v = self.config(c)["params"]["vectors"]
        self.assertEqual(v["v"]["quiver_index"], {"type": "ivf_pq", "compression": "x32"})
        self.assertNotIn("quantization_config", v["w"])

    def test_invalid_forms_are_400_naming_the_field(self):
        p = "/collections/badquant"
        base = {"size": 4, "distance": "Euclid"}
        cases = [
            ({"quantization_config": {"scalar": {"type": "int4"}}},
             "quantization_config.scalar.type"),
            ({"quantization_config": {"scalar": {}}}, "quantization_config.scalar: missing field `type`"),
            ({"quantization_config": {"scalar": {"type": "int8", "quantile": 0.2}}},
             "quantization_config.scalar.quantile"),
            ({"quantization_config": {"scalar": {"type": "int8", "quantile": "high"}}},
             "quantization_config.scalar.quantile"),
            ({"quantization_config": {"scalar": {"type": "int8", "always_ram": 1}}},
             "quantization_config.scalar.always_ram"),
            ({"quantization_config": {"scalar": {"type": "int8", "bits": 8}}},
             "quantization_config.scalar: unknown field `bits`"),
            ({"quantization_config": {"binary": {"encoding": "three_bits"}}},
             "quantization_config.binary.encoding"),
            ({"quantization_config": {"binary": {"query_encoding": "scalar2bits"}}},
             "quantization_config.binary.query_encoding"),
            ({"quantization_config": {"product": {}}}, "missing field `compression`"),
            ({"quantization_config": {"product": {"compression": "x3"}}},
             "quantization_config.product.compression"),
            ({"quantization_config": {"product": {"compression": 16}}},
             "quantization_config.product.compression"),
            ({"quantization_config": {"vector": {}}}, "unknown variant `vector`"),
            ({"quantization_config": {"scalar": {"type": "int8"}, "binary": {}}},
             "quantization_config: expected exactly one"),
            ({"quantization_config": "scalar"}, "quantization_config: expected exactly one"),
            ({"quiver_index": {"type": "ivf"}}, "quiver_index.type"),
            ({"quiver_index": {"type": "ivf_flat", "nlist": 0}}, "quiver_index.nlist"),
            ({"quiver_index": {"type": "ivf_flat", "nlist": -3}}, "quiver_index.nlist"),
            ({"quiver_index": {"type": "ivf_flat", "compression": "x8"}},
             "quiver_index.compression"),
            ({"quiver_index": {"type": "hnsw", "probes": 3}}, "quiver_index: unknown field `probes`"),
            ({"quiver_index": {"type": "ivf_flat"},
              "quantization_config": {"scalar": {"type": "int8"}}}, "takes no quantization_config"),
        ]
        for extra, says in cases:
            with self.subTest(extra=extra):
                body = {"vectors": dict(base)}
                body.update(extra)
                self.assertIn(says, self.err(400, "PUT", p, body))
        vcases = [
            ({"datatype": "float64"}, "vectors.datatype: unknown variant `float64`"),
            ({"datatype": 16}, "vectors.datatype"),
            ({"on_disk": "yes"}, "vectors.on_disk"),
            ({"quantization_config": {"binary": {"encoding": 2}}},
             "vectors.quantization_config.binary.encoding"),
            ({"quiver_index": 5}, "vectors.quiver_index"),
            ({"compression": "x4"}, "vectors: unknown field `compression`"),
        ]
        for extra, says in vcases:
            with self.subTest(extra=extra):
                v = dict(base)
                v.update(extra)
                self.assertIn(says, self.err(400, "PUT", p, {"vectors": v}))
        named = {"vectors": {"img": {"size": 4, "distance": "Dot",
                                     "quantization_config": {"product": {"compression": "x5"}}}}}
        self.assertIn("vectors.img.quantization_config.product.compression",
                      self.err(400, "PUT", p, named))
        self.assertEqual(self.ok("GET", p + "/exists"), {"exists": False})

    def test_patch_accepts_the_same_quantization_and_refuses_a_change(self):
        q = {"scalar": {"type": "int8", "quantile": 0.99}}
        c = self.create({"vectors": {"size": 4, "distance": "Dot"}, "quantization_config": q})
        self.assertIs(self.ok("PATCH", c, {"quantization_config": q}), True)
        self.assertIn("quantization_config", self.err(400, "PATCH", c, {"quantization_config": "Disabled"}))
        self.assertIn("quantization_config",
                      self.err(400, "PATCH", c, {"quantization_config": {"binary": {}}}))
        self.assertIn("quantization_config.scalar.type",
                      self.err(400, "PATCH", c, {"quantization_config": {"scalar": {"type": "x"}}}))
        self.assertIn("on_disk", self.err(400, "PATCH", c, {"vectors": {"": {"on_disk": True}}}))
        self.assertEqual(self.config(c)["quantization_config"], q)
        plain = self.create({"vectors": {"size": 4, "distance": "Dot"}}, "patch_plain")
        self.assertIs(self.ok("PATCH", plain, {"quantization_config": "Disabled"}), True)


class QuantSearchTest(Base):
    def create(self, body, name=None):
        name = name or self._testMethodName
        self.call("DELETE", "/collections/" + name)
        self.assertIs(self.ok("PUT", "/collections/" + name, body), True)
        return "/collections/" + name

    def small(self):
        c = self.create({"vectors": {"size": 4, "distance": "Euclid"},
                         "quantization_config": {"scalar": {"type": "int8"}}})
        self.ok("PUT", c + "/points?wait=true",
                {"points": [{"id": i, "vector": [i, 0, 0, 1]} for i in range(1, 9)]})
        return c

    def test_search_query_and_recommend_accept_quantization_params(self):
        c = self.small()
        params = {"hnsw_ef": 32, "exact": False, "indexed_only": False, "nprobe": 4,
                  "quantization": {"ignore": False, "rescore": True, "oversampling": 2.5}}
        hits = self.ok("POST", c + "/points/search", {"vector": [3, 0, 0, 1], "limit": 2,
                                                      "params": params})
        self.assertEqual(hits[0]["id"], 3)
        r = self.ok("POST", c + "/points/query", {"query": [5, 0, 0, 1], "limit": 1,
                                                  "params": params})
        self.assertEqual(r["points"][0]["id"], 5)
        r = self.ok("POST", c + "/points/recommend", {"positive": [2], "limit": 1, "params": params})
        self.assertIn(r[0]["id"], (1, 3))
        r = self.ok("POST", c + "/points/search/batch",
                    {"searches": [{"vector": [1, 0, 0, 1], "limit": 1,
                                   "params": {"quantization": {"ignore": True}}}]})
        self.assertEqual(r[0][0]["id"], 1)

    def test_invalid_search_params_are_400_naming_the_field(self):
        c = self.small()
        cases = [
            ({"quantization": {"oversampling": 0.5}}, "params.quantization.oversampling"),
            ({"quantization": {"oversampling": "2"}}, "params.quantization.oversampling"),
            ({"quantization": {"rescore": "yes"}}, "params.quantization.rescore"),
            ({"quantization": {"ignore": 1}}, "params.quantization.ignore"),
            ({"quantization": {"rescor": True}}, "params.quantization: unknown field `rescor`"),
            ({"quantization": 5}, "params.quantization"),
            ({"nprobe": 0}, "params.nprobe"),
            ({"nprobe": "all"}, "params.nprobe"),
            ({"ef": 10}, "params: unknown field `ef`"),
        ]
        for params, says in cases:
            with self.subTest(params=params):
                self.assertIn(says, self.err(400, "POST", c + "/points/search",
                                             {"vector": [1, 0, 0, 1], "limit": 1, "params": params}))
                self.assertIn(says, self.err(400, "POST", c + "/points/query",
                                             {"query": [1, 0, 0, 1], "params": params}))

    def test_uint8_rejects_fractions_and_values_above_255(self):
        c = self.create({"vectors": {"size": 4, "distance": "Dot", "datatype": "uint8"}})
        self.err(400, "PUT", c + "/points?wait=true", {"points": [{"id": 1, "vector": [1.5, 0, 0, 0]}]})
        self.err(400, "PUT", c + "/points?wait=true", {"points": [{"id": 1, "vector": [300, 0, 0, 0]}]})
        self.err(400, "PUT", c + "/points?wait=true", {"points": [{"id": 1, "vector": [-1, 0, 0, 0]}]})
        self.ok("PUT", c + "/points?wait=true", {"points": [{"id": 2, "vector": [0, 7, 255, 1]}]})
        self.assertEqual(self.ok("POST", c + "/points/count", {"exact": True})["count"], 1)
        got = self.ok("POST", c + "/points", {"ids": [2], "with_vector": True})
        self.assertEqual(got[0]["vector"], [0, 7, 255, 1])

    def test_float16_stores_rounded_values(self):
        c = self.create({"vectors": {"size": 4, "distance": "Euclid", "datatype": "float16"}})
        self.ok("PUT", c + "/points?wait=true", {"points": [{"id": 1, "vector": [0.1, 1, 2.5, -3]}]})
        v = self.ok("POST", c + "/points", {"ids": [1], "with_vector": True})[0]["vector"]
        for got, want in zip(v, [0.1, 1, 2.5, -3]):
            self.assertAlmostEqual(got, want, delta=abs(want) * 1e-3 + 1e-6)

    # ---- sealed segments --------------------------------------------------------------

    def sealed(self, storage, name):
        """A collection of N_POINTS seeded vectors whose segments have all
        been sealed and indexed with `storage` (VectorParams keys plus an
        optional collection-level quantization_config)."""
        vec = {"size": DIM, "distance": "Euclid"}
        vec.update(storage.get("vector", {}))
        body = {"vectors": vec, "hnsw_config": {"full_scan_threshold": 10, "m": 8},
                "optimizers_config": {"indexing_threshold": SEG}}
        if "quantization_config" in storage:
            body["quantization_config"] = storage["quantization_config"]
        c = self.create(body, name)
        data = vectors(7)
        for lo in range(0, N_POINTS, 64):
            self.ok("PUT", c + "/points?wait=true",
                    {"points": [{"id": i, "vector": data[i]} for i in range(lo, min(lo + 64, N_POINTS))]})
        # Waiting for the background optimizer is not a timing assertion:
        # the loop only ends early, and a build that never finishes fails.
        end = time.monotonic() + 120
        info = None
        while time.monotonic() < end:
            info = self.ok("GET", c)
            if info["indexed_vectors_count"] >= N_POINTS - SEG and info["status"] == "green":
                break
            time.sleep(0.05)
        self.assertGreaterEqual(info["indexed_vectors_count"], N_POINTS - SEG, info)
        return c, data

    def check_finds_itself(self, c, data, params=None):
        for i in (0, 5, 130, 260, 300):
            with self.subTest(point=i, params=params):
                body = {"vector": data[i], "limit": 3}
                if params:
                    body["params"] = params
                hits = self.ok("POST", c + "/points/search", body)
                self.assertEqual(hits[0]["id"], i, hits)
                self.assertAlmostEqual(hits[0]["score"], 0.0, places=4)

    def test_sealed_int8_search_finds_the_exact_nearest(self):
        c, data = self.sealed({"quantization_config": {"scalar": {"type": "int8"}},
                               "vector": {"on_disk": True}}, "sealed_int8")
        self.check_finds_itself(c, data)
        self.check_finds_itself(c, data, {"quantization": {"rescore": True, "oversampling": 2}})
        self.check_finds_itself(c, data, {"quantization": {"ignore": True}})
        mem = self.ok("GET", c + "?memory=true")["memory"]
        self.assertGreater(mem["code_bytes"], 0, mem)
        self.assertGreaterEqual(mem["vector_disk_bytes"], (N_POINTS - SEG) * DIM * 4, mem)
        self.assertEqual(mem["resident_index_bytes"],
                         mem["vector_bytes"] + mem["code_bytes"] + mem["graph_bytes"])
        self.assertNotIn("memory", self.ok("GET", c))

    def test_sealed_binary_search_with_oversampling_finds_the_exact_nearest(self):
        c, data = self.sealed({"quantization_config": {"binary": {"encoding": "two_bits"}}},
                              "sealed_bq")
        self.check_finds_itself(c, data, {"quantization": {"rescore": True, "oversampling": 4}})

    def test_sealed_product_search_finds_the_exact_nearest(self):
        c, data = self.sealed({"quantization_config": {"product": {"compression": "x4"}}},
                              "sealed_pq")
        self.check_finds_itself(c, data, {"quantization": {"oversampling": 4}})

    def test_sealed_ivf_flat_search_finds_the_exact_nearest(self):
        c, data = self.sealed({"vector": {"quiver_index": {"type": "ivf_flat", "nlist": 8}}},
                              "sealed_ivf")
        self.check_finds_itself(c, data, {"nprobe": 8})
        self.check_finds_itself(c, data, {"nprobe": 2})

    def test_sealed_ivf_pq_search_finds_the_exact_nearest(self):
        c, data = self.sealed({"vector": {"quiver_index": {"type": "ivf_pq", "nlist": 8,
                                                            "compression": "x4"}}},
                              "sealed_ivfpq")
        self.check_finds_itself(c, data, {"nprobe": 8, "quantization": {"oversampling": 4}})


if __name__ == "__main__":
    unittest.main()
