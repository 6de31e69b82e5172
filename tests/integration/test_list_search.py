#!/usr/bin/env python3
"""GET /v1/notes filters, sorting and cursor pagination; GET /v1/search; the compatibility routes."""
import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import ServerTestCase, main  # noqa: E402

STATUSES = ["draft", "active", "archived"]
VERIFS = ["pending", "verified", "rejected"]
N_BULK = 120
DOCS = [
    {"title": "Photosynthesis basics", "content": "Plants turn light into sugar through photosynthesis.",
     "type": "doc", "tags": ["biology"]},
    {"title": "Chlorophyll", "content": "The pigment that drives photosynthesis absorbs red and blue light.",
     "type": "doc", "tags": ["biology", "chemistry"], "confidence_score": 0.9},
    {"title": "Cellular respiration", "content": "The reverse of photosynthesis, in a sense.", "type": "essay",
     "tags": ["biology"], "status": "draft"},
    {"title": "Light reactions", "content": "Thylakoid membranes host them.", "type": "doc",
     "tags": ["photosynthesis"]},
    {"title": "Unrelated", "content": "Quantum chromodynamics and gluons.", "type": "doc", "tags": ["physics"]},
    {"title": "Calvin cycle", "content": "Carbon fixation: the dark side of photosynthesis. Photosynthesis again.",
     "type": "doc", "tags": ["biology"]},
]


def q(**params):
    return urllib.parse.urlencode(params)


class ListSearch(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bulk = []
        for i in range(N_BULK):
            cls.bulk.append(cls.srv.create_note(
                title="bulk %03d" % ((i * 37) % N_BULK), type="bulk", status=STATUSES[i % 3],
                verification_status=VERIFS[(i // 3) % 3], confidence_score=(i % 10) / 10,
                tags=["bulk", "mod3-%d" % (i % 3), "mod4-%d" % (i % 4)]))
        cls.docs = [cls.srv.create_note(**d) for d in DOCS]

    def page_all(self, path, limit=7, search=False):
        """Follows next_cursor to the end; returns the items and checks each page."""
        items, cursor, pages = [], None, 0
        sep = "&" if "?" in path else "?"
        while True:
            url = path + sep + "limit=%d" % limit + ("&cursor=" + urllib.parse.quote(cursor) if cursor else "")
            r = self.srv.get(url)
            data = self.assertEnvelope(r, pagination=True)
            pg = r.json["meta"]["pagination"]
            self.assertEqual(pg["limit"], limit)
            self.assertLessEqual(len(data), limit)
            items += data
            pages += 1
            self.assertLess(pages, 200, "pagination does not end")
            cursor = pg["next_cursor"]
            if not cursor:
                return items
            self.assertEqual(len(data), limit, "only the last page may be short")

    def ids(self, items):
        return [n["id"] for n in items]

    def assertSameSet(self, got, expected):
        g = self.ids(got)
        self.assertEqual(len(g), len(set(g)), "duplicates across pages")
        self.assertEqual(set(g), set(self.ids(expected)))

    # ---- pagination -------------------------------------------------------------------------
    def test_pagination_default_sort(self):
        items = self.page_all("/v1/notes?type=bulk", 7)
        self.assertSameSet(items, self.bulk)
        keys = [n["created_at"] for n in items]
        self.assertEqual(keys, sorted(keys, reverse=True))

    def test_pagination_with_ties(self):
        # confidence has 10 distinct values over 120 notes: ties must neither repeat nor skip notes
        for order in ("asc", "desc"):
            with self.subTest(order=order):
                items = self.page_all("/v1/notes?type=bulk&sort=confidence_score&order=" + order, 7)
                self.assertSameSet(items, self.bulk)
                cs = [n["confidence_score"] for n in items]
                self.assertEqual(cs, sorted(cs, reverse=(order == "desc")))

    def test_sort_title_and_created(self):
        items = self.page_all("/v1/notes?type=bulk&sort=title&order=asc", 50)
        self.assertEqual([n["title"] for n in items], sorted(n["title"] for n in self.bulk))
        items = self.page_all("/v1/notes?type=bulk&sort=created_at&order=asc", 100)
        self.assertEqual(self.ids(items), self.ids(self.bulk))
        items = self.page_all("/v1/notes?type=bulk&sort=updated_at&order=desc", 100)
        self.assertSameSet(items, self.bulk)

    def test_default_limit(self):
        r = self.srv.get("/v1/notes")
        self.assertEqual(len(self.assertEnvelope(r, pagination=True)), 20)
        self.assertEqual(r.json["meta"]["pagination"]["limit"], 20)
        self.assertTrue(r.json["meta"]["pagination"]["next_cursor"])

    # ---- filters ----------------------------------------------------------------------------
    def check_filter(self, params, pred, universe=None):
        universe = universe if universe is not None else self.bulk
        items = self.page_all("/v1/notes?" + q(type="bulk", **params), 100)
        expected = [n for n in universe if pred(n)]
        self.assertTrue(expected, "the filter test must select something")
        self.assertLess(len(expected), len(universe) + 1)
        self.assertSameSet(items, expected)

    def test_filters(self):
        self.check_filter({"status": "draft"}, lambda n: n["status"] == "draft")
        self.check_filter({"verification_status": "verified"}, lambda n: n["verification_status"] == "verified")
        self.check_filter({"tags": "bulk,mod3-1"}, lambda n: "mod3-1" in n["tags"])
        self.check_filter({"tags": "mod3-1,mod4-2"}, lambda n: "mod3-1" in n["tags"] and "mod4-2" in n["tags"])
        self.check_filter({"tags_any": "mod3-1,mod4-2"}, lambda n: "mod3-1" in n["tags"] or "mod4-2" in n["tags"])
        # a repeated parameter adds up (tags=a&tags=b is tags=a,b)
        items = self.page_all("/v1/notes?" + q(type="bulk") + "&tags=mod3-1&tags=mod4-2", 100)
        self.assertSameSet(items, [n for n in self.bulk if "mod3-1" in n["tags"] and "mod4-2" in n["tags"]])
        self.check_filter({"min_confidence": "0.7"}, lambda n: n["confidence_score"] >= 0.7)
        self.check_filter({"status": "active", "verification_status": "rejected", "min_confidence": "0.3"},
                          lambda n: n["status"] == "active" and n["verification_status"] == "rejected"
                          and n["confidence_score"] >= 0.3)
        # type alone, across both sets
        items = self.page_all("/v1/notes?type=doc", 100)
        self.assertSameSet(items, [n for n in self.docs if n["type"] == "doc"])
        self.assertEqual(self.page_all("/v1/notes?type=nothing-here", 10), [])
        self.assertEqual(self.page_all("/v1/notes?tags=bulk,biology", 10), [])

    def test_created_range(self):
        lo, hi = self.bulk[30]["created_at"], self.bulk[80]["created_at"]
        self.check_filter({"created_after": lo, "created_before": hi}, lambda n: lo < n["created_at"] < hi)
        self.check_filter({"created_after": lo}, lambda n: n["created_at"] > lo)
        self.check_filter({"created_before": hi}, lambda n: n["created_at"] < hi)
        # offsets are accepted in RFC 3339
        r = self.srv.get("/v1/notes?" + q(created_after="2000-01-01T02:00:00+02:00", limit=1))
        self.assertEqual(len(self.assertEnvelope(r, pagination=True)), 1)
        r = self.srv.get("/v1/notes?" + q(created_after="2200-01-01T00:00:00Z"))
        self.assertEqual(self.assertEnvelope(r, pagination=True), [])

    def test_updated_range(self):
        time.sleep(0.01)
        before = max(n["updated_at"] for n in self.srv.get("/v1/notes?limit=100&sort=updated_at").data)
        time.sleep(0.01)
        targets = [self.docs[4], self.docs[3]]
        for n in targets:
            self.assertEnvelope(self.srv.request("PATCH", "/v1/notes/" + n["id"], json_body={"human_notes": "seen"}))
        items = self.page_all("/v1/notes?" + q(updated_after=before), 10)
        self.assertSameSet(items, targets)
        items = self.page_all("/v1/notes?" + q(updated_after=before, sort="updated_at", order="asc"), 10)
        self.assertEqual(self.ids(items), self.ids(targets))
        items = self.page_all("/v1/notes?" + q(type="doc", updated_before=before), 10)
        self.assertNotIn(targets[0]["id"], self.ids(items))

    # ---- invalid queries --------------------------------------------------------------------
    def test_invalid_queries(self):
        title_cursor = self.srv.get("/v1/notes?sort=title&limit=2").json["meta"]["pagination"]["next_cursor"]
        cases = [
            ("cursor=garbage", "cursor"), ("cursor=" + urllib.parse.quote(title_cursor), "cursor"),
            ("colour=red", "colour"), ("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"),
            ("limit=", "limit"), ("status=published", "status"), ("verification_status=x", "verification_status"),
            ("min_confidence=1.5", "min_confidence"), ("min_confidence=abc", "min_confidence"),
            ("created_after=yesterday", "created_after"), ("updated_before=2020-13-01T00:00:00Z", "updated_before"),
            ("created_after=2999-01-01T00:00:00Z", "created_after"), ("created_before=9999-12-31T23:59:59Z", "created_before"),
            ("sort=relevance", "sort"), ("sort=bogus", "sort"), ("order=up", "order"), ("q=word", "q"),
            ("type=%ff", "type"), ("type=%zz", "type"),
        ]
        for query, field in cases:
            with self.subTest(query=query):
                r = self.srv.get("/v1/notes?" + query)
                self.assertProblem(r, 422, None, [field])

    def test_unknown_parameter_names_are_echoed_printable(self):
        # names are not percent-decoded; raw bytes outside printable ASCII come back as '?', on every
        # query parser (notes, full-text search, semantic search, tasks)
        for path in [b"/v1/notes?caf\xc3\xa9=1", b"/v1/search?q=a&caf\xc3\xa9=1",
                     b"/v1/search?mode=semantic&q=a&caf\xc3\xa9=1", b"/v1/tasks?caf\xc3\xa9=1"]:
            with self.subTest(path=path):
                out = self.srv.raw(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                head, _, body = out.partition(b"\r\n\r\n")
                self.assertIn(b" 422 ", head.split(b"\r\n")[0], out[:300])
                fields = {e["field"] for e in json.loads(body)["errors"]}
                self.assertEqual(fields, {"caf??"}, body)

    # ---- search -----------------------------------------------------------------------------
    def test_search(self):
        r = self.srv.get("/v1/search?q=photosynthesis")
        data = self.assertEnvelope(r, pagination=True)
        expected = [d for d in self.docs if "photosynthesis" in (d["title"] + d["content"] + " ".join(d["tags"])).lower()]
        self.assertSameSet(data, expected)
        for n in data:
            self.assertIn("<mark>", n["snippet"], n)
            self.assertIn("</mark>", n["snippet"], n)
            self.assertIsInstance(n["score"], (int, float))
            for k in ("title", "content", "tags", "version"):
                self.assertIn(k, n)
        scores = [n["score"] for n in data]
        self.assertEqual(scores, sorted(scores, reverse=True), "relevance order: higher score first")
        # case-insensitive, multi-word
        data = self.assertEnvelope(self.srv.get("/v1/search?" + q(q="PIGMENT light")), pagination=True)
        self.assertEqual(self.ids(data), [self.docs[1]["id"]])
        # phrase
        data = self.assertEnvelope(self.srv.get("/v1/search?" + q(q='"dark side"')), pagination=True)
        self.assertEqual(self.ids(data), [self.docs[5]["id"]])
        # no hits
        self.assertEqual(self.assertEnvelope(self.srv.get("/v1/search?q=zebra"), pagination=True), [])

    def test_search_filters_and_pages(self):
        data = self.assertEnvelope(self.srv.get("/v1/search?" + q(q="photosynthesis", type="doc")), pagination=True)
        self.assertTrue(data and all(n["type"] == "doc" for n in data))
        data = self.assertEnvelope(self.srv.get("/v1/search?" + q(q="photosynthesis", status="draft")), pagination=True)
        self.assertEqual(self.ids(data), [self.docs[2]["id"]])
        data = self.assertEnvelope(self.srv.get("/v1/search?" + q(q="photosynthesis", min_confidence="0.8")),
                                   pagination=True)
        self.assertEqual(self.ids(data), [self.docs[1]["id"]])
        data = self.assertEnvelope(self.srv.get("/v1/search?" + q(q="photosynthesis", tags="biology,chemistry")),
                                   pagination=True)
        self.assertEqual(self.ids(data), [self.docs[1]["id"]])
        data = self.assertEnvelope(self.srv.get("/v1/search?" + q(q="bulk", tags_any="mod4-1", type="bulk",
                                                                    limit=100)), pagination=True)
        self.assertEqual(len(data), N_BULK // 4)
        allhits = self.page_all("/v1/search?q=photosynthesis", 2)
        self.assertEqual(len(allhits), 5)
        self.assertEqual(len(set(self.ids(allhits))), 5)
        allhits = self.page_all("/v1/search?q=bulk&sort=title&order=asc", 7)
        self.assertSameSet(allhits, self.bulk)
        self.assertEqual([n["title"] for n in allhits], sorted(n["title"] for n in self.bulk))

    def test_search_invalid(self):
        for query, field in (("q=", "q"), ("", "q"), ("q=a&limit=0", "limit"), ("q=a&cursor=zzz", "cursor"),
                             ("q=a&nope=1", "nope"), ("q=" + "a" * 1001, "q"), ("q=a&sort=bogus", "sort")):
            with self.subTest(query=query):
                self.assertProblem(self.srv.get("/v1/search?" + query), 422, None, [field])

    def test_search_hostile_syntax(self):
        hostile = ['"a" OR NEAR(', "*", ":", '"', "NEAR(a b", "title:x", "a AND", "AND", "OR OR", "^", "(", ")))",
                   "-a", "'", "\\", "a*b*", "{a b}", "NOT", "a NOT", "col:*", '"unterminated', "\u0000x",
                   "\u6f22\u5b57", "\U0001F600", "%", "a:b:c", "+", "NEAR/2", "content:photosynthesis"]
        for text in hostile:
            with self.subTest(q=text):
                r = self.srv.get("/v1/search?" + q(q=text))
                self.assertIn(r.status, (200, 422), r)
                if r.status == 200:
                    self.assertEnvelope(r, pagination=True)
                else:
                    self.assertProblem(r, 422)

    # ---- compatibility routes ---------------------------------------------------------------
    def assertDeprecated(self, r, successor):
        self.assertEqual(r.header("deprecation"), "@1795564800", r)
        self.assertEqual(r.header("link"), '<%s>; rel="successor-version"' % successor, r)

    def test_compat_search_notes(self):
        v1 = self.srv.get("/v1/search?" + q(q="photosynthesis", type="doc", limit=3))
        r = self.srv.post("/search_notes", {"query": "photosynthesis", "filters": {"type": "doc"}, "limit": 3})
        self.assertEqual(self.assertEnvelope(r, pagination=True), v1.data)
        self.assertEqual(r.json["meta"]["pagination"], v1.json["meta"]["pagination"])
        self.assertDeprecated(r, "/v1/search")
        # second page through the cursor
        cur = r.json["meta"]["pagination"]["next_cursor"]
        r2 = self.srv.post("/search_notes", {"query": "photosynthesis", "filters": {"type": "doc"}, "limit": 3,
                                             "cursor": cur})
        v2 = self.srv.get("/v1/search?" + q(q="photosynthesis", type="doc", limit=3, cursor=cur))
        self.assertEqual(self.assertEnvelope(r2, pagination=True), v2.data)
        r = self.srv.post("/search_notes", {"query": "photosynthesis", "filters": {"tags": ["biology", "chemistry"]}})
        self.assertEqual(self.ids(self.assertEnvelope(r, pagination=True)), [self.docs[1]["id"]])
        # errors are problem+json with the deprecation headers too
        r = self.srv.post("/search_notes", {"query": ""})
        self.assertProblem(r, 422, None, ["q"])
        self.assertDeprecated(r, "/v1/search")
        self.assertProblem(self.srv.post("/search_notes", {"query": "x", "bogus": 1}), 422, None, ["bogus"])
        self.assertProblem(self.srv.post("/search_notes", {"query": "x", "filters": {"bogus": 1}}), 422, None,
                           ["bogus"])
        self.assertProblem(self.srv.post("/search_notes", {"query": ["x"]}), 422)
        # null means "not given": the first page of an agent loop sends "cursor": null
        r = self.srv.post("/search_notes", {"query": "photosynthesis", "cursor": None, "filters": {"type": None},
                                            "limit": 3})
        v1 = self.srv.get("/v1/search?" + q(q="photosynthesis", limit=3))
        self.assertEqual(self.assertEnvelope(r, pagination=True), v1.data)

    def test_compat_get_note_by_id(self):
        n = self.docs[0]
        v1 = self.srv.get("/v1/notes/" + n["id"])
        for key in ("note_id", "id"):
            r = self.srv.post("/get_note_by_id", {key: n["id"]})
            self.assertEqual(self.assertEnvelope(r), v1.data)
            self.assertDeprecated(r, "/v1/notes/" + n["id"])
        r = self.srv.post("/get_note_by_id", {"note_id": "01890000-0000-7000-8000-000000000000"})
        self.assertProblem(r, 404)
        self.assertProblem(self.srv.post("/get_note_by_id", {"note_id": "nope"}), 422, None, ["note_id"])
        self.assertProblem(self.srv.post("/get_note_by_id", {}), 422, None, ["note_id"])
        self.assertProblem(self.srv.post("/get_note_by_id", {"note_id": n["id"], "x": 1}), 422, None, ["x"])

    def test_compat_notes_from_schema(self):
        body = {"title": "from schema \u00e9", "content": "c", "tags": ["compat"], "confidence_score": 0.3}
        r = self.srv.post("/notes_from_schema", body)
        n = self.assertEnvelope(r, 201)
        self.assertDeprecated(r, "/v1/notes")
        self.assertEqual(r.header("location"), "/v1/notes/" + n["id"])
        g = self.assertEnvelope(self.srv.get("/v1/notes/" + n["id"]))
        self.assertEqual(g, n)
        for k, v in body.items():
            self.assertEqual(g[k], v)
        self.assertProblem(self.srv.post("/notes_from_schema", {"title": "x", "colour": 1}), 422, None, ["colour"])
        self.srv.request("DELETE", "/v1/notes/" + n["id"])


if __name__ == "__main__":
    main()
