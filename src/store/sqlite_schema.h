/* sqlite_schema: the SQLite schema as an ordered list of migrations (internal to store_sqlite.c).
 * Migration i (1-based) takes PRAGMA user_version from i-1 to i. Migrations are append-only: never edit
 * one that has shipped; add the next. */
#ifndef PAKE_STORE_SQLITE_SCHEMA_H
#define PAKE_STORE_SQLITE_SCHEMA_H
extern const char *const pk_sqlite_migrations[];
extern const int pk_sqlite_migration_count;
#endif
