/* Request work on the libuv thread pool, answered from HTTP_WRITEABLE.
 *
 * lws lets a response be written only from the connection's WRITEABLE
 * callback, and a connection can go away while its job runs: the job then
 * stays the pool's until it returns, and only frees itself. */
#include "gateway/internal.h"

#include "common/err.h"

static void job_run(uv_work_t *w)
{
    gw_http_job *job = w->data;
    job->run(job);
}

static void job_after(uv_work_t *w, int status)
{
    gw_http_job *job = w->data;
    (void)status;
    if (!job->wsi) {
        job->free(job); /* the client went away meanwhile */
        return;
    }
    job->conn->job = NULL;
    job->conn->job_done = job;
    lws_callback_on_writable(job->wsi);
}

int gw_http_job_start(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_http_job *job)
{
    job->srv = srv;
    job->wsi = wsi;
    job->conn = conn;
    job->work.data = job;
    int rc = uv_queue_work(srv->loop, &job->work, job_run, job_after);
    if (rc != 0) {
        job->free(job);
        return rc;
    }
    conn->job = job;
    return 0;
}

int gw_http_job_answer(gw_server *srv, struct lws *wsi, gw_http_conn *conn)
{
    gw_http_job *job = conn->job_done;
    conn->job_done = NULL;
    int rc = job->answer(srv, wsi, conn, job);
    job->free(job);
    return rc;
}

void gw_http_job_abandon(gw_http_conn *conn)
{
    if (conn->job) {
        conn->job->wsi = NULL; /* the pool still has it: job_after frees */
        conn->job = NULL;
    }
    if (conn->job_done) {
        conn->job_done->free(conn->job_done);
        conn->job_done = NULL;
    }
}
