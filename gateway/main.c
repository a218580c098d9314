/* posternd: the gateway daemon.
 *
 *   posternd --config FILE          run in the foreground, log to stderr
 *   posternd --check-config FILE    validate FILE; exit 0 or 2
 *
 * Exit codes: 0 clean stop, 1 runtime failure, 2 configuration error.
 */
#include "gateway/config.h"
#include "gateway/server.h"

#include "common/err.h"
#include "common/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define EXIT_CONFIG 2

typedef struct {
    uv_loop_t *loop;
    const char *config_path;
    gw_server *srv;
    uv_signal_t sig_term, sig_int, sig_hup;
} daemon_state;

static void usage(FILE *f)
{
    fprintf(f, "usage: posternd --config FILE\n"
               "       posternd --check-config FILE\n"
               "       posternd --version\n");
}

static void close_signals(daemon_state *d)
{
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
}

static void on_stopped(gw_server *srv, void *data)
{
    (void)srv;
    close_signals(data);
}

static void on_signal(uv_signal_t *h, int signum)
{
    daemon_state *d = h->data;
    if (signum == SIGHUP) {
        char err[1024];
        gw_config *cfg;
        if (gw_config_load(d->config_path, &cfg, err, sizeof(err)) != 0) {
            gw_server_note_reload_failure(d->srv);
            log_event(LOG_ERROR, "config.reload", "result=failed err=%s", log_q(err));
            return;
        }
        gw_server_reload(d->srv, cfg);
        return;
    }
    log_event(LOG_INFO, "signal", "signal=%s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    gw_server_drain(d->srv);
}

static int run(const char *path)
{
    char err[1024];
    gw_config *cfg;
    if (gw_config_load(path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "posternd: %s\n", err);
        return EXIT_CONFIG;
    }
    log_set_level(cfg->log_level);
    /* A client that vanishes mid-write must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    daemon_state d = {.loop = &loop, .config_path = path};
    uv_loop_init(&loop);

    int rc = gw_server_open(&loop, cfg, on_stopped, &d, &d.srv, err, sizeof(err));
    if (rc != 0) {
        log_event(LOG_ERROR,
                  rc == PST_E_CONFIG ? "config.invalid" : "listen.failed", "err=%s",
                  log_q(err));
        fprintf(stderr, "posternd: %s\n", err);
        uv_loop_close(&loop);
        return rc == PST_E_CONFIG ? EXIT_CONFIG : EXIT_FAILURE;
    }

    uv_signal_t *sigs[] = {&d.sig_term, &d.sig_int, &d.sig_hup};
    int signums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&loop, sigs[i]);
        sigs[i]->data = &d;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    log_event(LOG_INFO, "gateway.ready", "pid=%ld config=%s", (long)getpid(), log_q(path));

    uv_run(&loop, UV_RUN_DEFAULT);
    gw_server_free(d.srv);
    rc = uv_loop_close(&loop);
    if (rc != 0)
        log_event(LOG_WARN, "loop.close", "err=%s", uv_strerror(rc));
    log_event(LOG_INFO, "gateway.exit", "status=0");
    return 0;
}

static int check_config(const char *path)
{
    char err[1024];
    gw_config *cfg;
    if (gw_config_load(path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return EXIT_CONFIG;
    }
    gw_config_free(cfg);
    printf("%s: OK\n", path);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("posternd %s\n", POSTERN_VERSION);
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--config") == 0)
        return run(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--check-config") == 0)
        return check_config(argv[2]);
    usage(stderr);
    return EXIT_CONFIG;
}
