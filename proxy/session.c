/* The one session interface: picks the back end by kind and passes calls
 * through its ops table. */
#include "proxy/proxy.h"

#include <errno.h>

static const proxy_ops *const backends[PROXY_KIND_COUNT] = {
    [PROXY_SSH] = &proxy_ssh_ops,
    [PROXY_TCP] = &proxy_tcp_ops,
};

static const char *const state_names[] = {
    "connecting", "negotiating", "authenticating", "connected", "eof",
};

const char *proxy_state_name(proxy_state st)
{
    return (unsigned)st < sizeof(state_names) / sizeof(state_names[0]) ? state_names[st]
                                                                      : "unknown";
}

static const char *const end_names[] = {
    "closed", "unreachable", "refused", "timeout", "auth_failed",
    "hostkey_mismatch", "hostkey_unknown", "protocol", "local", "reset",
};

const char *proxy_end_name(proxy_end e)
{
    return (unsigned)e < sizeof(end_names) / sizeof(end_names[0]) ? end_names[e] : "unknown";
}

int proxy_session_open(uv_loop_t *loop, const proxy_target *t, const proxy_callbacks *cb,
                       void *ud, proxy_session **out)
{
    *out = NULL;
    if ((unsigned)t->kind >= PROXY_KIND_COUNT || !backends[t->kind])
        return -EINVAL;
    return backends[t->kind]->open(loop, t, cb, ud, out);
}

int proxy_session_write(proxy_session *s, const void *buf, size_t len)
{
    return s->ops->write(s, buf, len);
}

int proxy_session_input(proxy_session *s, const proxy_input *in)
{
    return s->ops->input ? s->ops->input(s, in) : -ENOTSUP;
}

void proxy_session_resize(proxy_session *s, int cols, int rows)
{
    if (s->ops->resize)
        s->ops->resize(s, cols, rows);
}

void proxy_session_pause(proxy_session *s, bool paused) { s->ops->pause(s, paused); }

void proxy_session_close(proxy_session *s)
{
    if (s)
        s->ops->close(s);
}
