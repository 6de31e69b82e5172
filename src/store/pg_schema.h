/* pg_schema: the PostgreSQL store's migrations (pg_schema.c explains the tables). Internal. */
#ifndef PAKE_STORE_PG_SCHEMA_H
#define PAKE_STORE_PG_SCHEMA_H
extern const char *const pk_pg_migrations[];
extern const int pk_pg_migration_count;
#endif
