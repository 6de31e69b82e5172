#!/usr/bin/env python3
"""Notes over HTTP: CRUD with every field, defaults, Unicode round trips, validation (422 with field
errors), ETag / If-Match / If-None-Match, delete, history, links, Idempotency-Key."""
import json
import os
import re
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import UUID_RE, ServerTestCase, main  # noqa: E402

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
FULL = {
    "title": "Full note",
    "content": "# Heading\n\nSome *markdown* content.",
    "type": "research.paper",
    "status": "draft",
    "verification_status": "verified",
    "source_uri": "https://example.org/paper?id=1&x=y",
    "tags": ["alpha", "beta", "gamma"],
    "metadata": {"author": "Ada", "n": 3, "nested": {"list": [1, 2.5, None, True], "s": "x"}},
    "confidence_score": 0.875,
    "ai_summary": "A summary.",
    "human_notes": "Reviewed.",
}
UNICODE = {
    "title": "Emoji \U0001F600\U0001F9EA\u200d and CJK 漢字かな한글",
    "content": "RTL: \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u200f; combining: e\u0301 a\u0308 "
               "n\u0303\u0323; astral \U0001D11E; zero width \u200b; nul-free \u00a0 end",
    "tags": ["\u6f22\u5b57", "\U0001F680rocket", "cafe\u0301"],
    "metadata": {"\u05de\u05e4\u05ea\u05d7": "\u0642\u064a\u0645\u0629", "emoji\U0001F600": ["\u00e9", "e\u0301"]},
    "human_notes": "\u202eright-to-left override\u202c",
}


class Notes(ServerTestCase):
    def create(self, body, status=201, headers=None):
        r = self.srv.post("/v1/notes", body, headers=headers)
        if status == 201:
            self.assertEnvelope(r, 201)
        return r

    # ---- create / read ----------------------------------------------------------------------
    def test_create_with_all_fields(self):
        r = self.create(FULL)
        n = r.data
        for k, v in FULL.items():
            self.assertEqual(n[k], v, k)
        self.assertTrue(UUID_RE.match(n["id"]), n["id"])
        self.assertEqual(n["version"], 1)
        self.assertTrue(RFC3339_UTC.match(n["created_at"]), n["created_at"])
        self.assertTrue(RFC3339_UTC.match(n["updated_at"]), n["updated_at"])
        self.assertEqual(r.header("etag"), '"1"')
        self.assertEqual(r.header("location"), "/v1/notes/" + n["id"])
        g = self.srv.get(r.header("location"))
        self.assertEqual(self.assertEnvelope(g), n)
        self.assertEqual(g.header("etag"), '"1"')

    def test_defaults(self):
        n = self.create({"title": "only a title"}).data
        self.assertEqual(n["content"], "")
        self.assertEqual(n["type"], "note")
        self.assertEqual(n["status"], "active")
        self.assertEqual(n["verification_status"], "pending")
        self.assertEqual(n["confidence_score"], 0.5)
        self.assertEqual(n["tags"], [])
        self.assertEqual(n["metadata"], {})
        for k in ("source_uri", "ai_summary", "human_notes"):
            self.assertIsNone(n[k], k)
        self.assertEqual(n["created_at"], n["updated_at"])

    def test_unicode_round_trip(self):
        r = self.create(UNICODE)
        n = r.data
        g = self.assertEnvelope(self.srv.get("/v1/notes/" + n["id"]))
        for k, v in UNICODE.items():
            self.assertEqual(n[k], v, k)
            self.assertEqual(g[k], v, k)
        # escaped input (\\uXXXX surrogate pairs) decodes to the same text
        body = json.dumps({"title": UNICODE["title"]}, ensure_ascii=True)
        r2 = self.srv.request("POST", "/v1/notes", body=body, headers={"Content-Type": "application/json"})
        self.assertEqual(self.assertEnvelope(r2, 201)["title"], UNICODE["title"])
        # and the raw bytes on the wire are valid UTF-8 of the same text
        self.assertIn(UNICODE["title"].encode("utf-8"), g and self.srv.get("/v1/notes/" + n["id"]).body)

    def test_duplicate_tags_dropped_order_kept(self):
        n = self.create({"title": "t", "tags": ["b", "a", "b", "c", "a"]}).data
        self.assertEqual(n["tags"], ["b", "a", "c"])

    def test_get_unknown_and_malformed_ids(self):
        self.assertProblem(self.srv.get("/v1/notes/01890000-0000-7000-8000-000000000000"), 404, "not_found")
        self.assertProblem(self.srv.get("/v1/notes/not-a-uuid"), 404, "not_found")
        # upper-case ids are the same note
        n = self.create({"title": "upper"}).data
        self.assertEqual(self.assertEnvelope(self.srv.get("/v1/notes/" + n["id"].upper()))["id"], n["id"])

    # ---- validation -------------------------------------------------------------------------
    def test_validation_errors(self):
        cases = [
            ({"title": "x", "colour": "red"}, ["colour"]),
            ({"title": "x", "id": "01890000-0000-7000-8000-000000000000"}, ["id"]),
            ({"title": "x", "version": 3}, ["version"]),
            ({"title": "x", "created_at": "2020-01-01T00:00:00Z"}, ["created_at"]),
            ({"title": "x", "updated_at": "2020-01-01T00:00:00Z"}, ["updated_at"]),
            ({"title": "x", "status": "published"}, ["status"]),
            ({"title": "x", "verification_status": "maybe"}, ["verification_status"]),
            ({"title": "x", "confidence_score": 1.5}, ["confidence_score"]),
            ({"title": "x", "confidence_score": -0.01}, ["confidence_score"]),
            ({"title": "x", "confidence_score": "0.5"}, ["confidence_score"]),
            ({"title": 42}, ["title"]),
            ({"title": ""}, ["title"]),
            ({"title": None}, ["title"]),
            ({}, ["title"]),
            ({"content": "no title"}, ["title"]),
            ({"title": "x" * 501}, ["title"]),
            ({"title": "x", "tags": ["t%d" % i for i in range(65)]}, ["tags"]),
            ({"title": "x", "tags": "a,b"}, ["tags"]),
            ({"title": "x", "tags": ["ok", 3]}, ["tags[1]"]),
            ({"title": "x", "tags": ["ok", ""]}, ["tags[1]"]),
            ({"title": "x", "metadata": [1, 2]}, ["metadata"]),
            ({"title": "x", "type": "Has Spaces"}, ["type"]),
            ({"title": "x", "content": None}, ["content"]),
            ({"title": "x", "source_uri": 7}, ["source_uri"]),
            ({"title": "x", "status": "published", "colour": 1, "confidence_score": 9}, ["status", "colour",
                                                                                        "confidence_score"]),
        ]
        before = self.count_notes()
        for body, fields in cases:
            with self.subTest(body=json.dumps(body)[:80]):
                r = self.srv.post("/v1/notes", body)
                self.assertProblem(r, 422, "validation_failed", fields)
        self.assertEqual(self.count_notes(), before, "no note was created by an invalid request")
        for body in (b"[]", b'"string"', b"3", b"null", b"true"):
            with self.subTest(body=body):
                r = self.srv.request("POST", "/v1/notes", body=body, headers={"Content-Type": "application/json"})
                self.assertProblem(r, 422)

    def count_notes(self):
        n, cursor = 0, None
        while True:
            r = self.srv.get("/v1/notes?limit=100" + ("&cursor=" + cursor if cursor else ""))
            self.assertEnvelope(r, pagination=True)
            n += len(r.data)
            cursor = r.json["meta"]["pagination"]["next_cursor"]
            if not cursor:
                return n

    # ---- patch / etags ----------------------------------------------------------------------
    def test_patch_if_match(self):
        n = self.create({"title": "v1", "tags": ["a"]}).data
        url = "/v1/notes/" + n["id"]
        r = self.srv.request("PATCH", url, json_body={"title": "v2"}, headers={"If-Match": '"1"'})
        p = self.assertEnvelope(r)
        self.assertEqual(p["title"], "v2")
        self.assertEqual(p["tags"], ["a"], "fields not in the patch are kept")
        self.assertEqual(p["version"], 2)
        self.assertEqual(r.header("etag"), '"2"')
        self.assertGreaterEqual(p["updated_at"], n["updated_at"])
        self.assertEqual(p["created_at"], n["created_at"])
        # stale tag
        r = self.srv.request("PATCH", url, json_body={"title": "v3"}, headers={"If-Match": '"1"'})
        self.assertProblem(r, 412)
        # weak tags never match for writes
        r = self.srv.request("PATCH", url, json_body={"title": "v3"}, headers={"If-Match": 'W/"2"'})
        self.assertProblem(r, 412)
        # malformed tag
        r = self.srv.request("PATCH", url, json_body={"title": "v3"}, headers={"If-Match": 'garbage'})
        self.assertProblem(r, 412)
        self.assertEqual(self.srv.get(url).data["title"], "v2", "a failed precondition changes nothing")
        # list of tags containing the current one? strong comparison of a single tag is enough; "*" matches
        r = self.srv.request("PATCH", url, json_body={"status": "archived"}, headers={"If-Match": "*"})
        self.assertEqual(self.assertEnvelope(r)["version"], 3)
        # no If-Match: unconditional
        r = self.srv.request("PATCH", url, json_body={"source_uri": None, "confidence_score": 0.1})
        p = self.assertEnvelope(r)
        self.assertEqual(p["version"], 4)
        self.assertIsNone(p["source_uri"])
        self.assertEqual(p["status"], "archived")

    def test_patch_validation(self):
        n = self.create({"title": "patch me"}).data
        url = "/v1/notes/" + n["id"]
        for body, fields in (({"title": ""}, ["title"]), ({"id": "x"}, ["id"]), ({"version": 9}, ["version"]),
                             ({"bogus": 1}, ["bogus"]), ({"status": "nope"}, ["status"]),
                             ({"confidence_score": 2}, ["confidence_score"]), ({"title": None}, ["title"]),
                             ({"tags": None}, ["tags"])):
            with self.subTest(body=body):
                self.assertProblem(self.srv.request("PATCH", url, json_body=body), 422, None, fields)
        self.assertProblem(self.srv.request("PATCH", url, json_body={}), 422)
        self.assertEqual(self.srv.get(url).data["version"], 1)
        self.assertProblem(self.srv.request("PATCH", "/v1/notes/01890000-0000-7000-8000-000000000000",
                                            json_body={"title": "x"}), 404)

    def test_if_none_match(self):
        n = self.create({"title": "cached"}).data
        url = "/v1/notes/" + n["id"]
        r = self.srv.get(url, headers={"If-None-Match": '"1"'})
        self.assertEqual(r.status, 304, r)
        self.assertEqual(r.body, b"")
        self.assertEqual(r.header("etag"), '"1"')
        self.assertCorrelation(r)
        r = self.srv.get(url, headers={"If-None-Match": '"7", "1"'})
        self.assertEqual(r.status, 304, r)
        r = self.srv.get(url, headers={"If-None-Match": '"2"'})
        self.assertEnvelope(r)
        # a tag like "11" must not match version 1 by substring
        r = self.srv.get(url, headers={"If-None-Match": '"11"'})
        self.assertEnvelope(r)
        self.srv.request("PATCH", url, json_body={"title": "changed"})
        r = self.srv.get(url, headers={"If-None-Match": '"1"'})
        self.assertEqual(self.assertEnvelope(r)["title"], "changed")
        self.assertEqual(r.header("etag"), '"2"')

    # ---- delete -----------------------------------------------------------------------------
    def test_delete(self):
        n = self.create({"title": "doomed"}).data
        url = "/v1/notes/" + n["id"]
        r = self.srv.request("DELETE", url, headers={"If-Match": '"5"'})
        self.assertProblem(r, 412)
        r = self.srv.request("DELETE", url)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b"")
        self.assertCorrelation(r)
        self.assertProblem(self.srv.get(url), 404, "not_found")
        self.assertProblem(self.srv.request("DELETE", url), 404)
        self.assertProblem(self.srv.request("PATCH", url, json_body={"title": "x"}), 404)

    # ---- history ----------------------------------------------------------------------------
    def test_history(self):
        n = self.srv.post("/v1/notes", {"title": "h", "confidence_score": 0.2},
                          headers={"X-Request-ID": "hist-create"}).data
        url = "/v1/notes/" + n["id"]
        self.srv.request("PATCH", url, json_body={"confidence_score": 0.6}, headers={"X-Request-ID": "hist-p1"})
        self.srv.request("PATCH", url, json_body={"title": "h2"}, headers={"X-Request-ID": "hist-p2"})
        self.srv.request("PATCH", url, json_body={"confidence_score": 0.9}, headers={"X-Request-ID": "hist-p3"})
        h = self.assertEnvelope(self.srv.get(url + "/history"))
        self.assertEqual(h["note_id"], n["id"])
        ev = h["events"]
        self.assertEqual([e["action"] for e in ev], ["create", "update", "update", "update"])
        self.assertEqual([e["request_id"] for e in ev], ["hist-create", "hist-p1", "hist-p2", "hist-p3"])
        self.assertEqual([e["version"] for e in ev], [1, 2, 3, 4])
        self.assertIn("title", ev[2]["fields"])
        self.assertTrue(all(e["principal"] for e in ev))
        ch = h["confidence_history"]
        self.assertEqual([(c["from"], c["to"]) for c in ch], [(None, 0.2), (0.2, 0.6), (0.6, 0.9)])
        self.assertEqual([c["request_id"] for c in ch], ["hist-create", "hist-p1", "hist-p3"])
        # kept after delete
        self.srv.request("DELETE", url, headers={"X-Request-ID": "hist-del"})
        r = self.srv.get(url + "/history")
        if r.status == 200:
            self.assertEqual(r.data["events"][-1]["action"], "delete")
            self.assertEqual(r.data["events"][-1]["request_id"], "hist-del")
        else:
            self.assertProblem(r, 404)
        self.assertProblem(self.srv.get("/v1/notes/01890000-0000-7000-8000-000000000000/history"), 404)

    # ---- links ------------------------------------------------------------------------------
    def test_links(self):
        a = self.create({"title": "a"}).data
        b = self.create({"title": "b"}).data
        c = self.create({"title": "c"}).data
        url = "/v1/notes/%s/links" % a["id"]
        r = self.srv.post(url, {"target_id": b["id"], "type": "cites", "strength": 0.9, "metadata": {"why": "x"}})
        l1 = self.assertEnvelope(r, 201)
        self.assertEqual((l1["source_id"], l1["target_id"], l1["type"], l1["strength"], l1["metadata"]),
                         (a["id"], b["id"], "cites", 0.9, {"why": "x"}))
        self.assertTrue(UUID_RE.match(l1["id"]))
        l2 = self.assertEnvelope(self.srv.post("/v1/notes/%s/links" % c["id"], {"target_id": a["id"]}), 201)
        self.assertEqual((l2["type"], l2["strength"]), ("related", 0.5))
        links = self.assertEnvelope(self.srv.get(url))
        self.assertEqual([l["id"] for l in links], [l1["id"], l2["id"]])
        self.assertEqual(self.assertEnvelope(self.srv.get("/v1/notes/%s/links" % b["id"])), [l1])
        # duplicate (same source, target, type)
        self.assertProblem(self.srv.post(url, {"target_id": b["id"], "type": "cites"}), 409)
        # same pair, other type is fine
        self.assertEnvelope(self.srv.post(url, {"target_id": b["id"], "type": "extends"}), 201)
        # unknown source / target notes
        ghost = "01890000-0000-7000-8000-000000000000"
        self.assertProblem(self.srv.post("/v1/notes/%s/links" % ghost, {"target_id": b["id"]}), 404)
        self.assertProblem(self.srv.get("/v1/notes/%s/links" % ghost), 404)
        r = self.srv.post(url, {"target_id": ghost})
        self.assertIn(r.status, (404, 422), r)
        self.assertProblem(r, r.status)
        # bad bodies
        for body, fields in (({"target_id": "nope"}, ["target_id"]), ({}, ["target_id"]),
                             ({"target_id": 5}, ["target_id"]),
                             ({"target_id": b["id"], "strength": 1.5}, ["strength"]),
                             ({"target_id": b["id"], "type": ""}, ["type"]),
                             ({"target_id": b["id"], "metadata": []}, ["metadata"]),
                             ({"target_id": b["id"], "extra": 1}, ["extra"])):
            with self.subTest(body=body):
                self.assertProblem(self.srv.post(url, body), 422, None, fields)
        r = self.srv.post(url, {"target_id": a["id"]})  # self link
        self.assertProblem(r, 422)
        self.assertEqual(len(self.srv.get(url).data), 3)

    # ---- idempotency ------------------------------------------------------------------------
    def test_idempotent_replay(self):
        body = {"title": "idem", "tags": ["x"]}
        h = {"Idempotency-Key": "key-replay-1"}
        r1 = self.srv.post("/v1/notes", body, headers=h)
        n1 = self.assertEnvelope(r1, 201)
        self.assertIsNone(r1.header("idempotent-replayed"))
        r2 = self.srv.post("/v1/notes", body, headers=h)
        n2 = self.assertEnvelope(r2, 201)
        self.assertEqual(r2.header("idempotent-replayed"), "true")
        self.assertEqual(n1, n2)
        self.assertEqual(r2.header("etag"), '"1"')
        self.assertNotEqual(r1.header("x-request-id"), r2.header("x-request-id"))
        self.assertEqual(self.titles().count("idem"), 1)
        # same key, different body
        r3 = self.srv.post("/v1/notes", {"title": "idem", "tags": ["y"]}, headers=h)
        self.assertProblem(r3, 422, "idempotency_key_reused")
        # a failed (422) request does not burn its key
        h2 = {"Idempotency-Key": "key-invalid-first"}
        self.assertProblem(self.srv.post("/v1/notes", {"title": ""}, headers=h2), 422)
        self.assertEnvelope(self.srv.post("/v1/notes", {"title": "fixed"}, headers=h2), 201)
        # bad keys
        self.assertProblem(self.srv.post("/v1/notes", body, headers={"Idempotency-Key": "x" * 256}), 400)

    def titles(self):
        out, cursor = [], None
        while True:
            r = self.srv.get("/v1/notes?limit=100" + ("&cursor=" + cursor if cursor else ""))
            out += [n["title"] for n in r.data]
            cursor = r.json["meta"]["pagination"]["next_cursor"]
            if not cursor:
                return out

    def test_idempotent_concurrent(self):
        body = {"title": "concurrent-idem"}
        results = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def worker():
            barrier.wait()
            r = self.srv.request("POST", "/v1/notes", json_body=body, headers={"Idempotency-Key": "race-1"},
                                 new_conn=True)
            with lock:
                results.append(r)

        ts = [threading.Thread(target=worker) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        created = [r for r in results if r.status == 201 and not r.header("idempotent-replayed")]
        replayed = [r for r in results if r.status == 201 and r.header("idempotent-replayed") == "true"]
        conflicts = [r for r in results if r.status == 409]
        self.assertEqual(len(created), 1, results)
        self.assertEqual(len(created) + len(replayed) + len(conflicts), 8, results)
        for r in conflicts:
            self.assertProblem(r, 409, "idempotency_in_progress")
        ids = {r.data["id"] for r in created + replayed}
        self.assertEqual(len(ids), 1)
        self.assertEqual(self.titles().count("concurrent-idem"), 1)
        # afterwards the key replays
        r = self.srv.post("/v1/notes", body, headers={"Idempotency-Key": "race-1"})
        self.assertEqual(r.header("idempotent-replayed"), "true")
        self.assertEqual(r.data["id"], ids.pop())


if __name__ == "__main__":
    main()
