/*
 * pg_schema: the PostgreSQL store's tables (same model as sqlite_schema.c; read that first).
 *
 * Differences from the embedded schema, and why:
 *  - notes.search is a stored generated tsvector (title weight A, tags B, content C) with a GIN index:
 *    PostgreSQL keeps it in step on every write, so there are no triggers and no second copy of the
 *    text to drift. Tags are indexed from their JSON array text (the parser drops the punctuation).
 *  - The text search configuration `pake` is English Snowball stemming WITHOUT a stop-word list, so
 *    that, as with the embedded store's porter tokenizer, every word can be searched ("the", "it").
 *  - tags, metadata and guard are `text`, not `jsonb`: jsonb reorders keys and drops duplicates, and
 *    the store serves the exact bytes it was given (canonicalised once on write).
 *  - Title order is case-insensitive on ASCII (SQLite's NOCASE): lower(title) under the "C" collation,
 *    indexed with seq as the tie-break of keyset pages.
 *  - The notes table gets a more eager autovacuum than the default (docs/postgres.md explains).
 * Versions are rows of pake_schema_migrations; `pake migrate` and `pake serve` apply what is missing
 * under an advisory lock, so several processes starting at once do not race.
 */
#include "store/pg_schema.h"

static const char m1[] =
    "CREATE TEXT SEARCH DICTIONARY pake_stem (TEMPLATE = snowball, Language = english);"
    "CREATE TEXT SEARCH CONFIGURATION pake (COPY = english);"
    "ALTER TEXT SEARCH CONFIGURATION pake ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word,"
    " hword, hword_part, numword, numhword, hword_numpart WITH pake_stem;"
    "CREATE TABLE notes ("
    " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " id text NOT NULL UNIQUE,"
    " title text NOT NULL,"
    " content text NOT NULL,"
    " type text NOT NULL,"
    " status text NOT NULL CHECK (status IN ('draft','active','archived')),"
    " verification_status text NOT NULL"
    "  CHECK (verification_status IN ('pending','verified','disputed','rejected')),"
    " source_uri text,"
    " tags text NOT NULL,"
    " metadata text NOT NULL,"
    " confidence_score double precision NOT NULL CHECK (confidence_score BETWEEN 0 AND 1),"
    " ai_summary text,"
    " human_notes text,"
    " guard text,"
    " flagged boolean NOT NULL DEFAULT false,"
    " created_at bigint NOT NULL,"
    " updated_at bigint NOT NULL,"
    " version bigint NOT NULL,"
    " search tsvector GENERATED ALWAYS AS ("
    "  setweight(to_tsvector('pake', title), 'A') || setweight(to_tsvector('pake', tags), 'B') ||"
    "  setweight(to_tsvector('pake', content), 'C')) STORED)"
    " WITH (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);"
    "CREATE INDEX notes_created ON notes(created_at, seq);"
    "CREATE INDEX notes_updated ON notes(updated_at, seq);"
    "CREATE INDEX notes_title ON notes((lower(title) COLLATE \"C\"), seq);"
    "CREATE INDEX notes_confidence ON notes(confidence_score, seq);"
    "CREATE INDEX notes_search ON notes USING gin(search);"
    "CREATE TABLE note_tags ("
    " tag text NOT NULL,"
    " note_seq bigint NOT NULL REFERENCES notes(seq) ON DELETE CASCADE,"
    " PRIMARY KEY (tag, note_seq));"
    "CREATE INDEX note_tags_note ON note_tags(note_seq);"
    "CREATE TABLE links ("
    " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " id text NOT NULL UNIQUE,"
    " source_id text NOT NULL REFERENCES notes(id) ON DELETE CASCADE,"
    " target_id text NOT NULL REFERENCES notes(id) ON DELETE CASCADE,"
    " type text NOT NULL,"
    " strength double precision NOT NULL CHECK (strength BETWEEN 0 AND 1),"
    " metadata text NOT NULL,"
    " created_at bigint NOT NULL,"
    " UNIQUE (source_id, target_id, type));"
    "CREATE INDEX links_target ON links(target_id);"
    "CREATE TABLE audit_log ("
    " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " note_id text NOT NULL,"
    " action text NOT NULL,"
    " version bigint NOT NULL,"
    " fields text NOT NULL,"
    " at bigint NOT NULL,"
    " request_id text,"
    " principal text,"
    " outcome text NOT NULL DEFAULT 'ok',"
    " guard text);"
    "CREATE INDEX audit_log_note ON audit_log(note_id, seq);"
    "CREATE TABLE confidence_history ("
    " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " note_id text NOT NULL,"
    " version bigint NOT NULL,"
    " old_score double precision,"
    " new_score double precision NOT NULL,"
    " at bigint NOT NULL,"
    " request_id text,"
    " principal text);"
    "CREATE INDEX confidence_history_note ON confidence_history(note_id, seq);"
    "CREATE TABLE idempotency ("
    " principal text NOT NULL,"
    " key text NOT NULL,"
    " request_hash text NOT NULL,"
    " state integer NOT NULL,"
    " status integer,"
    " body text,"
    " created_at bigint NOT NULL,"
    " PRIMARY KEY (principal, key));"
    "CREATE INDEX idempotency_created ON idempotency(created_at);";

const char *const pk_pg_migrations[] = {m1};
const int pk_pg_migration_count = (int)(sizeof pk_pg_migrations / sizeof pk_pg_migrations[0]);
