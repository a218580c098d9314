/* The gateway server: one libwebsockets context on the caller's libuv loop,
 * serving HTTPS and WSS on every configured listen address (and an optional
 * plain-HTTP listener that only redirects).
 *
 * Lifecycle (loop thread only):
 *   gw_server_open()    binds, loads or generates the certificate;
 *   uv_run()            the caller runs the loop;
 *   gw_server_reload()  swaps in a new config (SIGHUP);
 *   gw_server_drain()   stops taking sessions, waits up to the grace period
 *                       for live ones, then closes everything and calls the
 *                       stopped callback; uv_run then returns once the
 *                       caller has closed its own handles;
 *   gw_server_free()    after uv_run returned: final teardown.
 */
#ifndef PST_GATEWAY_SERVER_H
#define PST_GATEWAY_SERVER_H

#include "gateway/config.h"

#include <stddef.h>
#include <uv.h>

typedef struct gw_server gw_server;
typedef void (*gw_server_stopped_cb)(gw_server *srv, void *data);

/* Opens the server. Takes ownership of cfg in every case. 0 with *out set;
 * PST_E_CONFIG when a file the config names is unusable (bad certificate or
 * key); another negative code (e.g. -EADDRINUSE) when the server cannot
 * start. err gets a one-line message. */
int gw_server_open(uv_loop_t *loop, gw_config *cfg, gw_server_stopped_cb stopped,
                   void *stopped_data, gw_server **out, char *err, size_t errlen);

/* Applies a new configuration to new requests and sessions; live sessions
 * keep running. Takes ownership of cfg. Settings that need a restart
 * (listen addresses, TLS files) are logged as such and left as they were. */
void gw_server_reload(gw_server *srv, gw_config *cfg);

/* Starts a graceful shutdown. A second call closes at once. */
void gw_server_drain(gw_server *srv);

/* Counts a failed reload in /metrics. */
void gw_server_note_reload_failure(gw_server *srv);

/* Frees everything; call after uv_run has returned. Runs the loop once more
 * so that the close callbacks of libwebsockets' handles can fire. */
void gw_server_free(gw_server *srv);

#endif
