/*
 * Interim guard wiring: the security guard module (src/guard/) is plugged in here when it lands.
 * Until then every input is allowed; nothing claims otherwise (see docs/guard.md).
 */
#include "server/services.h"

pk_err *pk_services_guard_init(pk_server *s)
{
    return NULL;
}
void pk_services_guard_dispose(pk_server *s) {}
void pk_services_reload(pk_server *s) {}
pk_err *pk_services_guard(pk_req *r, int surface, const char *field, const char *text, size_t len,
                          pk_buf *flag_json)
{
    return NULL;
}
