#!/usr/bin/env python3
"""The embedded store's in-memory search index, end to end.

Two `pake serve` processes share one data directory: A with the index (the default), B with
`--no-search-index` (FTS5 only). Every relevance search must give A and B the same page (notes,
order, snippets, scores, cursors), also with filters and across pages, and A must see writes made
by B (another process) at once. A's metrics show which engine answered, so the test fails if A
silently used FTS5.
"""
import os
import random
import re
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import PG_URL, Server, main, wait_for  # noqa: E402
import unittest  # noqa: E402

WORDS = ("run running runs runner note notes search searching index indexed café Zürich naïve market markets "
         "graph vector token tokens queue worker the a of and to in is for with system prompt alpha beta "
         "gamma delta river mountain city Leipzig analysis analyses connect connected 42 2026 knowledge engine "
         "server fast safe boring sentence colon über straße résumé").split()
QUERIES = ["run", "runner", "notes", "cafe", "ZURICH", "market analysis", "the", "alpha beta", "42",
           "naive", "resume", "index index", "knowledge engine server", "strasse", "straße", "\"city\" river",
           "nothingmatches", "boring safe fast", "of the and"]


def text(rng, n):
    out = []
    for i in range(n):
        w = rng.choice(WORDS[:20]) if rng.random() < 0.6 else rng.choice(WORDS)
        sep = "" if i == 0 else rng.choice([" ", " ", " ", " ", ". ", ": ", ",  ", ".\n\n", "! ", ' "', '\\ '])
        out.append(sep + w)
    return "".join(out)


def metric(srv, name, labels=""):
    body = srv.get("/metrics").body.decode()
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), body, re.M)
    return float(m.group(1)) if m else None


@unittest.skipIf(PG_URL, "the in-memory index belongs to the embedded store")
class SearchIndex(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        big = ["--rate-search", "100000", "--burst-search", "100000", "--rate-write", "100000",
               "--burst-write", "100000", "--cache-bytes", "0"]
        cls.a = Server(big).start()
        try:
            cls.b = Server(big + ["--no-search-index"], data_dir=cls.a.data_dir).start()
        except Exception:
            cls.a.stop()
            cls.a.cleanup()
            raise
        rng = random.Random(7)
        cls.ids = []
        for i in range(160):
            tags = [rng.choice(WORDS).lower() for _ in range(rng.randint(0, 3))]
            note = cls.a.create_note(title=text(rng, rng.randint(1, 6)), content=text(rng, rng.randint(0, 120)),
                                     tags=sorted(set(tags)), type=rng.choice(["doc", "essay"]))
            cls.ids.append(note["id"])
        # the first search starts the build; until it is ready FTS5 answers
        cls.a.get("/v1/search?q=run")
        wait_for("the search index to be ready", lambda: metric(cls.a, "pake_search_index_ready") == 1, timeout=30)

    @classmethod
    def tearDownClass(cls):
        problems = []
        for srv in (cls.b, cls.a):  # b shares a's directory: a removes it
            problems += srv.stop()[1]
            srv.cleanup()
        if problems:
            raise AssertionError("server problems: %s" % problems)

    def search(self, srv, **params):
        r = srv.get("/v1/search?" + urllib.parse.urlencode(params))
        self.assertEqual(r.status, 200, r.body[:300])
        return r.json

    def same(self, **params):
        a, b = self.search(self.a, **params), self.search(self.b, **params)
        self.assertEqual([n["id"] for n in a["data"]], [n["id"] for n in b["data"]], params)
        for x, y in zip(a["data"], b["data"]):
            self.assertEqual(x["snippet"], y["snippet"], (params, x["id"]))
            self.assertAlmostEqual(x["score"], y["score"], delta=1e-9 * abs(y["score"]))
            self.assertEqual({k: v for k, v in x.items() if k != "score"}, {k: v for k, v in y.items() if k != "score"})
        self.assertEqual(a["meta"]["pagination"]["next_cursor"], b["meta"]["pagination"]["next_cursor"])
        return a

    def engine_count(self, engine):
        return metric(self.a, "pake_search_queries_total", '{engine="%s"}' % engine) or 0

    def test_same_pages_as_fts5(self):
        before = self.engine_count("index")
        hits = 0
        for q in QUERIES:
            hits += len(self.same(q=q, limit=100)["data"])
        self.assertGreater(hits, 300)
        self.assertEqual(self.engine_count("index") - before, len(QUERIES))

    def test_filters_and_pages(self):
        for q in ("run", "the", "market"):
            self.same(q=q, type="essay", limit=50)
            self.same(q=q, tags="alpha", limit=50)
            for filt in ({}, {"type": "essay"}, {"tags": "alpha"}):  # pages, without and with filters
                cursor, pages = None, 0
                while True:
                    params = dict(filt, q=q, limit=7)
                    if cursor:
                        params["cursor"] = cursor
                    page = self.same(**params)
                    pages += 1
                    cursor = page["meta"]["pagination"]["next_cursor"]
                    if not cursor:
                        break
                    self.assertLess(pages, 100)
                if "tags" not in filt:  # a rare tag may fit on one page
                    self.assertGreater(pages, 1, (q, filt))

    def test_queries_it_cannot_answer_go_to_fts5(self):
        before = self.engine_count("fts5")
        self.same(q="run*", limit=30)
        self.same(q="\"knowledge engine\"", limit=30)
        self.assertEqual(self.engine_count("fts5") - before, 2)

    def test_sees_writes_of_another_process_at_once(self):
        before = self.engine_count("index")
        n = self.b.create_note(title="Quokka census", content="A zyxwvut appears here.", tags=["fauna"])
        self.assertEqual([x["id"] for x in self.search(self.a, q="zyxwvut")["data"]], [n["id"]])
        r = self.b.request("PATCH", "/v1/notes/" + n["id"], json_body={"content": "Now about wombats."},
                           headers={"If-Match": '"%d"' % n["version"]})
        self.assertIn(r.status, (200,), r.body[:300])
        self.assertEqual(self.search(self.a, q="zyxwvut")["data"], [])
        self.assertEqual([x["id"] for x in self.search(self.a, q="wombats")["data"]], [n["id"]])
        # a change of other fields shows too: pages come from the index's stored notes
        r = self.b.request("PATCH", "/v1/notes/" + n["id"], json_body={"confidence_score": 0.25, "status": "archived"})
        self.assertEqual(r.status, 200, r.body[:300])
        hit = self.search(self.a, q="wombats")["data"][0]
        self.assertEqual((hit["confidence_score"], hit["status"], hit["version"]), (0.25, "archived", 3))
        self.assertEqual(self.b.request("DELETE", "/v1/notes/" + n["id"]).status, 204)
        self.assertEqual(self.search(self.a, q="wombats")["data"], [])
        self.assertEqual(self.engine_count("index") - before, 5)
        self.assertGreater(metric(self.a, "pake_search_index_notes"), 100)
        self.assertGreater(metric(self.a, "pake_search_index_bytes"), 10000)


if __name__ == "__main__":
    main()
