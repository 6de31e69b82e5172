/* request: per-request dispatch, the middleware chain and responses (see server.h for the model). */
#ifndef PAKE_SERVER_REQUEST_H
#define PAKE_SERVER_REQUEST_H
#include "server/loop.h"

void pk_request_dispatch(pk_loop *l, h2o_req_t *req);
void pk_request_job_returned(pk_job *j);
/* Rewrites h2o's own error responses (413 from the body limit, ...) as problem+json. */
void pk_problem_filter_register(h2o_pathconf_t *path);

/* Route matching (router.c). Returns the route for method+path, or NULL with *allow filled (comma
 * separated methods, for 405) when the path exists under other methods. Parameters point into path. */
const pk_route *pk_route_match(const char *method, size_t mlen, const char *path, size_t plen,
                               h2o_iovec_t *params, int *nparams, char *allow, size_t allow_len);
#endif
