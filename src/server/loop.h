/*
 * loop: one event-loop thread. Owns an h2o context, its SO_REUSEPORT listener, the queue on which the
 * offload pool returns finished jobs, and one deadline timer list per route class. Everything in a
 * pk_loop is touched only by its own thread, except pk_loop_post (thread-safe).
 */
#ifndef PAKE_SERVER_LOOP_H
#define PAKE_SERVER_LOOP_H
#include "server/server.h"
#include <pthread.h>

struct pk_loop {
    pk_server *srv;
    int index;
    pthread_t thread;
    h2o_evloop_t *evloop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    int listen_fd;
    h2o_socket_t *listener;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t jobs_receiver;
    h2o_multithread_receiver_t ctrl_receiver;
    h2o_timeout_t deadline_timeouts[PK_RC__COUNT];
    bool exit_loop;
};

/* Thread-safe: hands a finished job back to its loop. */
void pk_loop_post(pk_loop *l, pk_job *j);
#endif
