"""Seeds a PAKE server with N notes over REST and writes them (as stored) to a JSON file, so the
reference server searches exactly the same documents.  python3 seed.py <base-url> <n> <out.json>"""
import http.client
import json
import random
import sys
import urllib.parse

base, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)
WORDS = ["w%03d" % i for i in range(500)]  # a query word then matches about 11% of the notes
rnd = random.Random(42)
for i in range(n):
    body = {"title": "note %d %s" % (i, rnd.choice(WORDS)),
            "content": " ".join(rnd.choice(WORDS) for _ in range(60)), "tags": [rnd.choice(WORDS)]}
    conn.request("POST", "/v1/notes", json.dumps(body), {"content-type": "application/json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 201, r.status
notes, cursor = [], None
while True:
    q = "/v1/notes?limit=100" + ("&cursor=" + urllib.parse.quote(cursor) if cursor else "")
    conn.request("GET", q)
    page = json.loads(conn.getresponse().read())
    notes += page["data"]
    cursor = page["meta"]["pagination"]["next_cursor"]
    if not cursor:
        break
json.dump(notes, open(out, "w"))
print("seeded %d notes" % len(notes), file=sys.stderr)
