/*
 * sqlite_schema: the embedded store's tables.
 *
 * notes       one row per live note; `seq` (the rowid) is the insertion order, used as the tie-break
 *             of every keyset page and as the FTS5 rowid. Timestamps are wall-clock nanoseconds.
 *             tags/metadata/guard hold compact JSON exactly as it is served. `flagged` is derived
 *             from the guard verdict so the filter is an indexed column, not a JSON expression.
 * note_tags   (tag, note) pairs for tag filters; kept in step with notes.tags by the write path.
 * notes_fts   FTS5 over title, content and tags (migration 2; the tags column indexes the JSON array
 *             text, whose tokens are the tags), external content (no second copy of the text), kept
 *             in step by triggers; ranked by bm25 with title 10x, tags 5x, content 1x (rank config).
 * links       typed directed edges; deleting a note deletes its links (foreign keys are on).
 * audit_log, confidence_history
 *             append-only, keyed by note id (not a foreign key: they outlive the note).
 * idempotency one row per (principal, key): in progress (state 0) or done (state 1, with the response).
 */
#include "store/sqlite_schema.h"

static const char m1[] =
    "CREATE TABLE notes ("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " title TEXT NOT NULL COLLATE NOCASE,"
    " content TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN ('draft','active','archived')),"
    " verification_status TEXT NOT NULL"
    "  CHECK (verification_status IN ('pending','verified','disputed','rejected')),"
    " source_uri TEXT,"
    " tags TEXT NOT NULL,"
    " metadata TEXT NOT NULL,"
    " confidence_score REAL NOT NULL CHECK (confidence_score BETWEEN 0 AND 1),"
    " ai_summary TEXT,"
    " human_notes TEXT,"
    " guard TEXT,"
    " flagged INTEGER NOT NULL DEFAULT 0,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " version INTEGER NOT NULL);"
    "CREATE INDEX notes_created ON notes(created_at);"
    "CREATE INDEX notes_updated ON notes(updated_at);"
    "CREATE INDEX notes_title ON notes(title);"
    "CREATE INDEX notes_confidence ON notes(confidence_score);"
    "CREATE TABLE note_tags ("
    " tag TEXT NOT NULL,"
    " note_seq INTEGER NOT NULL REFERENCES notes(seq) ON DELETE CASCADE,"
    " PRIMARY KEY (tag, note_seq)) WITHOUT ROWID;"
    "CREATE INDEX note_tags_note ON note_tags(note_seq);"
    "CREATE VIRTUAL TABLE notes_fts USING fts5(title, content, content='notes', content_rowid='seq',"
    " tokenize='porter unicode61 remove_diacritics 2');"
    "INSERT INTO notes_fts(notes_fts, rank) VALUES ('rank', 'bm25(10.0, 1.0)');"
    "CREATE TRIGGER notes_fts_ai AFTER INSERT ON notes BEGIN"
    " INSERT INTO notes_fts(rowid, title, content) VALUES (new.seq, new.title, new.content); END;"
    "CREATE TRIGGER notes_fts_ad AFTER DELETE ON notes BEGIN"
    " INSERT INTO notes_fts(notes_fts, rowid, title, content)"
    "  VALUES ('delete', old.seq, old.title, old.content); END;"
    "CREATE TRIGGER notes_fts_au AFTER UPDATE OF title, content ON notes BEGIN"
    " INSERT INTO notes_fts(notes_fts, rowid, title, content)"
    "  VALUES ('delete', old.seq, old.title, old.content);"
    " INSERT INTO notes_fts(rowid, title, content) VALUES (new.seq, new.title, new.content); END;"
    "CREATE TABLE links ("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " source_id TEXT NOT NULL REFERENCES notes(id) ON DELETE CASCADE,"
    " target_id TEXT NOT NULL REFERENCES notes(id) ON DELETE CASCADE,"
    " type TEXT NOT NULL,"
    " strength REAL NOT NULL CHECK (strength BETWEEN 0 AND 1),"
    " metadata TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " UNIQUE (source_id, target_id, type));"
    "CREATE INDEX links_target ON links(target_id);"
    "CREATE TABLE audit_log ("
    " seq INTEGER PRIMARY KEY,"
    " note_id TEXT NOT NULL,"
    " action TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " fields TEXT NOT NULL,"
    " at INTEGER NOT NULL,"
    " request_id TEXT,"
    " principal TEXT);"
    "CREATE INDEX audit_log_note ON audit_log(note_id, seq);"
    "CREATE TABLE confidence_history ("
    " seq INTEGER PRIMARY KEY,"
    " note_id TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " old_score REAL,"
    " new_score REAL NOT NULL,"
    " at INTEGER NOT NULL,"
    " request_id TEXT,"
    " principal TEXT);"
    "CREATE INDEX confidence_history_note ON confidence_history(note_id, seq);"
    "CREATE TABLE idempotency ("
    " principal TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " request_hash TEXT NOT NULL,"
    " state INTEGER NOT NULL,"
    " status INTEGER,"
    " body BLOB,"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (principal, key)) WITHOUT ROWID;"
    "CREATE INDEX idempotency_created ON idempotency(created_at);";

/* 2: tags become searchable (the issue asks for full-text search over title, content and tags; m1
 * indexed title and content only, so a note was not found by its tag). The FTS table is rebuilt. */
static const char m2[] =
    "DROP TRIGGER notes_fts_ai;"
    "DROP TRIGGER notes_fts_ad;"
    "DROP TRIGGER notes_fts_au;"
    "DROP TABLE notes_fts;"
    "CREATE VIRTUAL TABLE notes_fts USING fts5(title, content, tags, content='notes', content_rowid='seq',"
    " tokenize='porter unicode61 remove_diacritics 2');"
    "INSERT INTO notes_fts(notes_fts, rank) VALUES ('rank', 'bm25(10.0, 1.0, 5.0)');"
    "CREATE TRIGGER notes_fts_ai AFTER INSERT ON notes BEGIN"
    " INSERT INTO notes_fts(rowid, title, content, tags) VALUES (new.seq, new.title, new.content, new.tags); "
    "END;"
    "CREATE TRIGGER notes_fts_ad AFTER DELETE ON notes BEGIN"
    " INSERT INTO notes_fts(notes_fts, rowid, title, content, tags)"
    "  VALUES ('delete', old.seq, old.title, old.content, old.tags); END;"
    "CREATE TRIGGER notes_fts_au AFTER UPDATE OF title, content, tags ON notes BEGIN"
    " INSERT INTO notes_fts(notes_fts, rowid, title, content, tags)"
    "  VALUES ('delete', old.seq, old.title, old.content, old.tags);"
    " INSERT INTO notes_fts(rowid, title, content, tags) VALUES (new.seq, new.title, new.content, new.tags); "
    "END;"
    "INSERT INTO notes_fts(notes_fts) VALUES ('rebuild');";

/* 3: the audit log records each write's outcome ("ok", "flagged", or the refusal that reached the
 * store: "not_found", "precondition_failed") and the security guard's verdict when it flagged the text. */
static const char m3[] = "ALTER TABLE audit_log ADD COLUMN outcome TEXT NOT NULL DEFAULT 'ok';"
                         "ALTER TABLE audit_log ADD COLUMN guard TEXT;";

/* 4: search_log names every note whose searchable text changed (insert, update of title, content or
 * tags, delete), written by triggers in the writing transaction, so each process's in-memory search
 * index can catch up with writes made by any process (src/store/sqlite_search.c). Trimmed to the last
 * 100,000 entries (an index that fell further behind is rebuilt). AUTOINCREMENT: an id is never given
 * twice, even after the table was emptied, so "newest id" always tells whether anything changed. */
static const char m4[] =
    "CREATE TABLE search_log (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL);"
    "CREATE TRIGGER search_log_ai AFTER INSERT ON notes BEGIN INSERT INTO search_log(seq) VALUES (new.seq); "
    "END;"
    "CREATE TRIGGER search_log_ad AFTER DELETE ON notes BEGIN INSERT INTO search_log(seq) VALUES (old.seq); "
    "END;"
    "CREATE TRIGGER search_log_au AFTER UPDATE OF title, content, tags ON notes BEGIN"
    " INSERT INTO search_log(seq) VALUES (new.seq); END;"
    "CREATE TRIGGER search_log_trim AFTER INSERT ON search_log WHEN new.id % 1024 = 0 BEGIN"
    " DELETE FROM search_log WHERE id <= new.id - 100000; END;";

/* 5: search_log also names notes whose other fields changed (status, confidence, metadata, ...): the
 * in-memory index keeps each note's JSON for search pages (store_sqlite.c, "stored notes"), which must
 * follow every update. */
static const char m5[] = "DROP TRIGGER search_log_au;"
                         "CREATE TRIGGER search_log_au AFTER UPDATE ON notes BEGIN"
                         " INSERT INTO search_log(seq) VALUES (new.seq); END;";

const char *const pk_sqlite_migrations[] = {m1, m2, m3, m4, m5};
const int pk_sqlite_migration_count = (int)(sizeof pk_sqlite_migrations / sizeof pk_sqlite_migrations[0]);
