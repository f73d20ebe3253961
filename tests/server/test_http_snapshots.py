#!/usr/bin/env python3
"""test_http_snapshots.py: collection snapshots over HTTP — create, list,
download (bytes and sha256 equal the file), delete, recover from a file://
location and from a multipart upload; refusals (locations outside the
snapshots directory, http(s), bad names, corrupted archives, checksum
mismatch), the separate upload limit, wait=false, API keys, and the
removal of leftovers at startup.

Run by test_http.py under CTest (`server_http`), or alone:
`python3 tests/server/test_http_snapshots.py` with QV_TEST_BIN / QV_CLI set.
"""
import hashlib
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qvserver import Base, Server, assert_sanitizer_clean  # noqa: E402

BOUNDARY = "qv-test-boundary-7MA4YWxkTrZu0gW"


def multipart(data, field="snapshot", filename="x.snapshot"):
    head = ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n" % (BOUNDARY, field, filename)).encode()
    return head + data + ("\r\n--%s--\r\n" % BOUNDARY).encode()


MP = {"Content-Type": "multipart/form-data; boundary=" + BOUNDARY}


class SnapshotBase(Base):
    def filled(self, name=None, n=40, dim=4):
        c = self.coll(name, size=dim, distance="Dot")
        pts = [{"id": i, "vector": [i, 1, -i, 0.5][:dim] + [0.25] * (dim - 4),
                "payload": {"i": i, "tag": "t%d" % (i % 3)}} for i in range(n)]
        for k in range(0, n, 50):  # small bodies: some classes lower the body limit
            self.upsert(c, pts[k:k + 50])
        return c

    def points(self, c):
        page = self.ok("POST", c + "/points/scroll", {"limit": 10000, "with_vector": True})
        return page["points"]

    def create(self, c):
        return self.ok("POST", c + "/snapshots")

    def download(self, c, name, **kw):
        return self.srv.request("GET", c + "/snapshots/" + name, **kw)

    def upload(self, c, data, query="", headers=None):
        return self.srv.request("POST", c + "/snapshots/upload" + query, raw=multipart(data),
                                headers=headers or MP)

    def snap_file(self, coll, name):
        return os.path.join(self.srv.data_dir, "snapshots", coll, name)


class SnapshotTest(SnapshotBase):
    def test_create_list_download_then_recover_by_upload(self):
        c = self.filled()
        before = self.points(c)
        d = self.create(c)
        name = self._testMethodName
        self.assertTrue(d["name"].startswith(name + "-") and d["name"].endswith(".snapshot"), d)
        self.assertRegex(d["creation_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
        self.assertRegex(d["checksum"], r"^[0-9a-f]{64}$")
        self.assertEqual(self.ok("GET", c + "/snapshots"), [d])
        status, h, data = self.download(c, d["name"])
        self.assertEqual(status, 200)
        self.assertEqual(h["content-type"], "application/octet-stream")
        self.assertIn(d["name"], h.get("content-disposition", ""))
        self.assertEqual(len(data), d["size"])
        self.assertEqual(hashlib.sha256(data).hexdigest(), d["checksum"])
        with open(self.snap_file(name, d["name"]), "rb") as f:
            self.assertEqual(f.read(), data)
        # Later writes and the drop are undone by the recovery.
        self.upsert(c, [{"id": 1000, "vector": [1, 1, 1, 1]}])
        self.assertIs(self.ok("DELETE", c), True)
        status, _, body = self.upload(c, data, "?wait=true&priority=snapshot&checksum=" + d["checksum"])
        self.assertEqual(status, 200, body)
        self.assertIs(json.loads(body)["result"], True)
        self.assertEqual(self.points(c), before)
        self.assertEqual(self.ok("GET", c)["config"]["params"]["vectors"], {"size": 4, "distance": "Dot"})
        # The snapshot outlived the collection and is still listed; delete it.
        self.assertEqual([x["name"] for x in self.ok("GET", c + "/snapshots")], [d["name"]])
        self.assertIs(self.ok("DELETE", c + "/snapshots/" + d["name"]), True)
        self.assertEqual(self.ok("GET", c + "/snapshots"), [])
        self.assertFalse(os.path.exists(self.snap_file(name, d["name"])))
        self.assertEqual(self.download(c, d["name"])[0], 404)
        self.err(404, "DELETE", c + "/snapshots/" + d["name"], contains="not found")

    def test_recover_from_location_into_the_same_and_a_new_collection(self):
        c = self.filled()
        before = self.points(c)
        d = self.create(c)
        path = self.snap_file(self._testMethodName, d["name"])
        self.ok("POST", c + "/points/delete?wait=true", {"points": list(range(10))})
        self.assertIs(self.ok("PUT", c + "/snapshots/recover", {"location": "file://" + path,
                                                                 "checksum": d["checksum"].upper()}), True)
        self.assertEqual(self.points(c), before)
        other = "/collections/" + self._testMethodName + "_copy"
        self.call("DELETE", other)
        self.assertIs(self.ok("PUT", other + "/snapshots/recover", {"location": "file://" + path}), True)
        self.assertEqual(self.points(other), before)
        # Percent-encoding and file://localhost/ are understood.
        enc = "file://localhost" + path.replace(".snapshot", "%2Esnapshot")
        self.assertIs(self.ok("PUT", other + "/snapshots/recover", {"location": enc}), True)

    def test_checksum_mismatch_is_400_and_changes_nothing(self):
        c = self.filled()
        d = self.create(c)
        self.ok("POST", c + "/points/delete?wait=true", {"points": [0, 1]})
        path = self.snap_file(self._testMethodName, d["name"])
        self.err(400, "PUT", c + "/snapshots/recover", {"location": "file://" + path, "checksum": "0" * 64},
                 "Snapshot checksum mismatch")
        status, _, body = self.download(c, d["name"])
        status, _, body = self.upload(c, body, "?checksum=" + "ab" * 32)
        self.assertEqual(status, 400, body)
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 38)

    def test_locations_outside_the_snapshots_directory_are_refused(self):
        c = self.filled(n=3)
        d = self.create(c)
        snapdir = os.path.join(os.path.realpath(self.srv.data_dir), "snapshots")
        coll_cfg = os.path.join(os.path.realpath(self.srv.data_dir), "collections",
                                self._testMethodName, "config.json")
        link = os.path.join(snapdir, self._testMethodName, "sneaky.snapshot")
        os.symlink(coll_cfg, link)
        for loc, want in (("file:///etc/passwd", "snapshots directory"),
                          ("file://" + snapdir + "/../collections/%s/config.json" % self._testMethodName,
                           "snapshots directory"),
                          ("file://" + link, "snapshots directory"),
                          ("file://" + snapdir, "snapshots directory"),
                          ("file://relative/x.snapshot", "absolute"),
                          ("http://127.0.0.1:1/x.snapshot", "not supported"),
                          ("https://example.com/x.snapshot", "not supported"),
                          ("s3://bucket/x", "file://")):
            self.err(400, "PUT", c + "/snapshots/recover", {"location": loc}, want)
        self.err(404, "PUT", c + "/snapshots/recover",
                 {"location": "file://" + snapdir + "/" + self._testMethodName + "/none.snapshot"})
        self.err(400, "PUT", c + "/snapshots/recover", {}, "missing field `location`")
        self.err(400, "PUT", c + "/snapshots/recover",
                 {"location": "file://" + self.snap_file(self._testMethodName, d["name"]), "priority": "x"},
                 "unknown variant")
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 3)

    def test_bad_and_missing_snapshot_names(self):
        c = self.filled(n=2)
        self.create(c)
        for bad in ("%2e%2e", ".hidden.snapshot", "a..b.snapshot", "a%5Cb.snapshot"):
            self.err(400, "GET", c + "/snapshots/" + bad, contains="invalid snapshot name")
            self.err(400, "DELETE", c + "/snapshots/" + bad, contains="invalid snapshot name")
        status, _, _ = self.download(c, "..%2F..%2Fcollections")
        self.assertIn(status, (400, 404))
        for missing in ("nosuch.snapshot", "x.snapshot.checksum", "whatever"):
            self.err(404, "GET", c + "/snapshots/" + missing, contains="not found")
        self.err(404, "GET", "/collections/no_such_coll_s/snapshots")
        self.err(404, "POST", "/collections/no_such_coll_s/snapshots")
        self.err(404, "GET", "/collections/no_such_coll_s/snapshots/x.snapshot")

    def test_corrupted_uploads_are_400_and_the_collection_is_untouched(self):
        c = self.filled()
        before = self.points(c)
        d = self.create(c)
        _, _, good = self.download(c, d["name"])
        self.upsert(c, [{"id": 500, "vector": [0, 0, 0, 1], "payload": {"late": True}}])
        header = bytearray(good)
        header[0] ^= 0x20  # the first member's name: the header checksum fails
        config = bytearray(good)
        config[512 + 5] ^= 0x01  # a byte of config.json (the first member's data)
        for bad in (bytes(header), bytes(config), good[: len(good) // 2], b"not a tar archive" * 64, b""):
            status, _, body = self.upload(c, bad)
            self.assertEqual(status, 400, (len(bad), body))
            msg = json.loads(body)["status"]["error"]
            self.assertTrue(msg.startswith("Wrong input: ") and len(msg) > 20, msg)
        now = self.points(c)
        self.assertEqual(len(now), len(before) + 1)
        self.assertEqual(now[:-1], before)
        self.upsert(c, [{"id": 501, "vector": [0, 0, 1, 1]}])  # still writable

    def test_upload_without_the_field_or_multipart_is_400(self):
        c = self.filled(n=2)
        status, _, body = self.srv.request("POST", c + "/snapshots/upload",
                                           raw=multipart(b"abc", field="other"), headers=MP)
        self.assertEqual(status, 400, body)
        self.assertIn("`snapshot`", json.loads(body)["status"]["error"])
        status, _, body = self.srv.request("POST", c + "/snapshots/upload", raw=b"{}",
                                           headers={"Content-Type": "application/json"})
        self.assertEqual(status, 400, body)
        self.assertIn("multipart/form-data", json.loads(body)["status"]["error"])
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 2)

    def test_wait_false_answers_202_accepted(self):
        c = self.filled(n=2)
        status, _, body = self.srv.request("POST", c + "/snapshots?wait=false")
        self.assertEqual(status, 202, body)
        r = json.loads(body)
        self.assertEqual(r["status"], "accepted")
        self.assertNotIn("result", r)
        names = [x["name"] for x in self.ok("GET", c + "/snapshots")]
        self.assertEqual(len(names), 1)
        status, _, body = self.srv.request("DELETE", c + "/snapshots/%s?wait=false" % names[0])
        self.assertEqual(status, 202, body)
        self.assertEqual(self.ok("GET", c + "/snapshots"), [])
        self.err(400, "POST", c + "/snapshots?wait=perhaps")

    def test_two_snapshots_in_one_second_get_distinct_names(self):
        c = self.filled(n=2)
        names = {self.create(c)["name"] for _ in range(3)}
        self.assertEqual(len(names), 3)
        self.assertEqual(sorted(names), [x["name"] for x in self.ok("GET", c + "/snapshots")])

    def test_named_vectors_survive_a_snapshot(self):
        c = "/collections/" + self._testMethodName
        self.call("DELETE", c)
        self.ok("PUT", c, {"vectors": {"a": {"size": 2, "distance": "Dot"}, "b": {"size": 3, "distance": "Euclid"}}})
        self.upsert(c, [{"id": 1, "vector": {"a": [1, 2], "b": [3, 4, 5]}}, {"id": 2, "vector": {"b": [0, 0, 1]}}])
        before = self.points(c)
        d = self.create(c)
        self.ok("DELETE", c)
        self.ok("PUT", c + "/snapshots/recover",
                {"location": "file://" + self.snap_file(self._testMethodName, d["name"])})
        self.assertEqual(self.points(c), before)


class SnapshotLimitTest(SnapshotBase):
    # A small JSON limit must not limit uploads, which have their own.
    server_args = ("--max-body-bytes", "65536", "--max-snapshot-upload-bytes", "400000")

    def test_upload_has_its_own_limit(self):
        c = self.filled(n=300, dim=64)
        d = self.create(c)
        _, _, data = self.download(c, d["name"])
        self.assertGreater(len(data), 65536)
        self.assertLess(len(data), 390000)
        status, _, body = self.upload(c, data)
        self.assertEqual(status, 200, body)
        status, _, body = self.upload(c, data + b"\0" * 400000)
        self.assertEqual(status, 413, body)
        self.assertIn("snapshot upload", json.loads(body)["status"]["error"])
        self.assertEqual(self.ok("POST", c + "/points/count", {})["count"], 300)
        left = [f for f in os.listdir(os.path.join(self.srv.data_dir, "snapshots")) if f.startswith(".upload-")]
        self.assertEqual(left, [])


class SnapshotAuthTest(SnapshotBase):
    server_args = ("--api-key", "full-key", "--read-only-api-key", "ro-key")

    def test_read_only_key_lists_and_downloads_but_cannot_change(self):
        full, ro = {"api-key": "full-key"}, {"api-key": "ro-key"}
        c = "/collections/snapauth"
        self.srv.request("PUT", c, {"vectors": {"size": 2, "distance": "Dot"}}, headers=full)
        self.srv.request("PUT", c + "/points?wait=true", {"points": [{"id": 1, "vector": [1, 0]}]}, headers=full)
        status, _, body = self.srv.request("POST", c + "/snapshots", headers=full)
        self.assertEqual(status, 200, body)
        name = json.loads(body)["result"]["name"]
        self.assertEqual(self.srv.request("GET", c + "/snapshots", headers=ro)[0], 200)
        self.assertEqual(self.srv.request("GET", c + "/snapshots/" + name, headers=ro)[0], 200)
        data = self.srv.request("GET", c + "/snapshots/" + name, headers=ro)[2]
        self.assertEqual(self.srv.request("POST", c + "/snapshots", headers=ro)[0], 403)
        self.assertEqual(self.srv.request("DELETE", c + "/snapshots/" + name, headers=ro)[0], 403)
        path = os.path.join(self.srv.data_dir, "snapshots", "snapauth", name)
        self.assertEqual(self.srv.request("PUT", c + "/snapshots/recover", {"location": "file://" + path},
                                          headers=ro)[0], 403)
        self.assertEqual(self.srv.request("POST", c + "/snapshots/upload", raw=multipart(data),
                                          headers=dict(MP, **ro))[0], 403)
        self.assertEqual(self.srv.request("POST", c + "/snapshots/upload", raw=multipart(data),
                                          headers=MP)[0], 401)
        self.assertEqual(self.srv.request("POST", c + "/snapshots/upload", raw=multipart(data),
                                          headers=dict(MP, **full))[0], 200)
        self.assertEqual(len(json.loads(self.srv.request("GET", c + "/snapshots", headers=ro)[2])["result"]), 1)


class SnapshotLeftoverTest(unittest.TestCase):
    def test_interrupted_uploads_and_creates_are_removed_at_startup(self):
        s = Server()
        self.addCleanup(s.cleanup)
        s.start()
        s.call("PUT", "/collections/lo", {"vectors": {"size": 2, "distance": "Dot"}})
        status, r = s.call("POST", "/collections/lo/snapshots")
        self.assertEqual(status, 200, r)
        self.assertEqual(s.stop(), 0)
        snaps = os.path.join(s.data_dir, "snapshots")
        for p in (os.path.join(snaps, ".upload-abc123"), os.path.join(snaps, "lo", ".tmp-1-1.snapshot")):
            with open(p, "wb") as f:
                f.write(b"partial")
        s.start()
        self.assertFalse(os.path.exists(os.path.join(snaps, ".upload-abc123")))
        self.assertFalse(os.path.exists(os.path.join(snaps, "lo", ".tmp-1-1.snapshot")))
        status, r = s.call("GET", "/collections/lo/snapshots")
        self.assertEqual([x["name"] for x in r["result"]], [r["result"][0]["name"]])
        self.assertTrue(re.match(r"^lo-\d{4}-", r["result"][0]["name"]))
        self.assertEqual(s.stop(), 0)
        assert_sanitizer_clean(self, s)


if __name__ == "__main__":
    unittest.main(verbosity=2)
