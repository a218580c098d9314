/* The identity API: login, logout, who am I, what may I reach, tokens.
 *
 *   POST   /api/login        {"user","password","totp"?} -> cookie
 *   POST   /api/logout
 *   GET    /api/me           user, roles, what they may reach
 *   GET    /api/vms          the VMs the user may reach
 *   POST   /api/tokens       {"name"?,"expires_in"?,"actions"?} -> bearer token
 *   GET    /api/tokens
 *   DELETE /api/tokens/ID
 *
 * A password check runs argon2id on the libuv thread pool, as a
 * gw_http_job (http_job.c): the job outlives its connection if the client
 * goes away, and is wiped when freed, since it holds the password. */
#include "gateway/internal.h"

#include "common/err.h"
#include "common/log.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOGIN_FAILED_MSG "invalid user name or password"
#define GW_TOKEN_MIN_SECONDS 5

typedef struct {
    gw_http_job base;
    char user[AUTH_NAME_MAX + 1];
    char addr[64];
    char password[AUTH_PASSWORD_MAX + 1];
    size_t password_len;
    char totp[16];
    bool has_totp;
    bool known;           /* the user exists, is enabled, has a password */
    char hash[AUTH_HASH_MAX];
    int verify_rc;        /* result from the pool */
} login_job;

static int64_t now_s(void) { return (int64_t)time(NULL); }

static json_t *str_array(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *action_array(unsigned actions)
{
    json_t *a = json_array();
    for (unsigned bit = 1; bit && bit <= AUTH_ACT_ADMIN; bit <<= 1)
        if (actions & bit)
            json_array_append_new(a, json_string(auth_action_name(bit)));
    return a;
}

static int audit(gw_server *srv, const char *event, json_t *fields)
{
    int rc = auth_audit_write(srv->audit, event, fields);
    json_decref(fields);
    return rc;
}

/* ---- login ------------------------------------------------------------ */

static void login_verify(gw_http_job *j)
{
    login_job *job = (login_job *)j;
    job->verify_rc = auth_password_verify(job->hash, job->password, job->password_len);
}

static void login_free(gw_http_job *job)
{
    OPENSSL_cleanse(job, sizeof(login_job));
    free(job);
}

static int respond_login_failure(gw_server *srv, struct lws *wsi, gw_http_conn *conn,
                                 const char *user, const char *addr, const char *reason,
                                 const char *message)
{
    char ukey[AUTH_NAME_MAX + 8], akey[80];
    snprintf(ukey, sizeof(ukey), "user:%s", user);
    snprintf(akey, sizeof(akey), "addr:%s", addr);
    int64_t now = now_s();
    bool locked_user = auth_throttle_fail(srv->throttle_users, ukey, now);
    bool locked_addr = auth_throttle_fail(srv->throttle_addrs, akey, now);
    srv->metrics.login_failures++;
    audit(srv, "login.failure",
          json_pack("{s:s,s:s,s:s}", "user", user, "source", addr, "reason", reason));
    log_event(LOG_INFO, "login.failure", "user=%s source=%s reason=%s", log_q(user),
              log_q(addr), reason);
    if (locked_user || locked_addr) {
        srv->metrics.lockouts++;
        audit(srv, "login.lockout",
              json_pack("{s:s,s:s,s:s,s:i}", "user", user, "source", addr, "key",
                        locked_user ? "user" : "address", "seconds",
                        srv->cfg->auth.throttle.lock_seconds));
        log_event(LOG_WARN, "login.lockout", "user=%s source=%s key=%s", log_q(user),
                  log_q(addr), locked_user ? "user" : "address");
    }
    return gw_http_error_json(wsi, conn, 401, message);
}

static int finish_login(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_http_job *j)
{
    login_job *job = (login_job *)j;
    auth_user *u = job->known ? auth_users_find(srv->users, job->user) : NULL;

    /* Unknown user, disabled account and wrong password all answer alike. */
    if (!u || u->disabled || job->verify_rc != 0) {
        const char *reason = !job->known ? "unknown_user_or_disabled"
                             : !u        ? "user_removed"
                                         : "bad_password";
        return respond_login_failure(srv, wsi, conn, job->user, job->addr, reason,
                                     LOGIN_FAILED_MSG);
    }

    bool mfa = false;
    if (u->totp_key_len) {
        if (!job->has_totp) {
            /* The password was right; ask for the second factor without
             * counting a failure. */
            json_t *body = json_pack("{s:s,s:b}", "error", "a one-time code is required",
                                     "mfa_required", 1);
            char *text = json_dumps(body, JSON_COMPACT);
            json_decref(body);
            return gw_http_respond(wsi, conn, 401, "application/json", text, strlen(text),
                                   true, NULL, 0, false);
        }
        uint64_t step = 0;
        if (auth_totp_verify(u->totp_key, u->totp_key_len, job->totp, now_s(),
                             auth_totp_last_step(srv->store, u->name), &step) != 0)
            return respond_login_failure(srv, wsi, conn, job->user, job->addr, "bad_totp",
                                         "invalid or already used one-time code");
        auth_totp_set_last_step(srv->store, u->name, step);
        mfa = true;
    } else if (auth_mfa_required(srv->cfg->roles, srv->cfg->nroles, u)) {
        audit(srv, "login.failure",
              json_pack("{s:s,s:s,s:s}", "user", u->name, "source", job->addr, "reason",
                        "mfa_not_enrolled"));
        return gw_http_error_json(wsi, conn, 403,
                                  "your role requires a second factor and none is enrolled; "
                                  "ask an administrator to enrol one");
    }

    char sid[AUTH_SESSION_ID_LEN + 1];
    if (auth_session_create(srv->store, u->name, mfa, now_s(), sid) != 0)
        return gw_http_error_json(wsi, conn, 500, "cannot create a session");
    /* Recorded before the client learns it is logged in. */
    if (audit(srv, "login.success",
              json_pack("{s:s,s:s,s:b}", "user", u->name, "source", job->addr, "mfa", mfa)) !=
        0) {
        auth_session_delete(srv->store, sid);
        OPENSSL_cleanse(sid, sizeof(sid));
        return gw_http_error_json(wsi, conn, 503, "the audit log cannot be written");
    }
    char ukey[AUTH_NAME_MAX + 8], akey[80];
    snprintf(ukey, sizeof(ukey), "user:%s", u->name);
    snprintf(akey, sizeof(akey), "addr:%s", job->addr);
    auth_throttle_clear(srv->throttle_users, ukey);
    auth_throttle_clear(srv->throttle_addrs, akey);
    srv->metrics.logins++;
    log_event(LOG_INFO, "login.success", "user=%s source=%s mfa=%d", u->name,
              log_q(job->addr), mfa);

    char cookie[AUTH_SESSION_ID_LEN + 128];
    snprintf(cookie, sizeof(cookie),
             GW_SESSION_COOKIE "=%s; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=%d",
             sid, srv->cfg->auth.session_max_seconds);
    OPENSSL_cleanse(sid, sizeof(sid));
    json_t *body = json_pack("{s:s,s:o,s:b}", "user", u->name, "roles",
                             str_array(u->roles, u->nroles), "mfa", mfa);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    gw_http_header hdrs[] = {{"set-cookie:", cookie}, {"cache-control:", "no-store"}};
    int rc = gw_http_respond(wsi, conn, 200, "application/json", text, strlen(text), true,
                             hdrs, 2, false);
    OPENSSL_cleanse(cookie, sizeof(cookie));
    return rc;
}

static const char *json_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int api_login(gw_server *srv, struct lws *wsi, gw_http_conn *conn)
{
    json_t *body = NULL;
    const char *err = gw_http_json_body(conn, &body);
    if (err)
        return gw_http_error_json(wsi, conn, 400, err);
    json_t *juser = json_object_get(body, "user"), *jpw = json_object_get(body, "password");
    json_t *jtotp = json_object_get(body, "totp");
    int rc;
    if (!json_is_string(juser) || !json_is_string(jpw)) {
        rc = gw_http_error_json(wsi, conn, 400, "expected \"user\" and \"password\" strings");
        goto out;
    }
    if (jtotp && !json_is_string(jtotp)) {
        rc = gw_http_error_json(wsi, conn, 400, "expected \"totp\" to be a string");
        goto out;
    }
    const char *user = json_string_value(juser);
    if (!auth_name_valid(user)) {
        rc = gw_http_error_json(wsi, conn, 400,
                                "a user name is 1 to 64 letters, digits, '.', '_', '-', '@'");
        goto out;
    }
    if (json_string_length(jpw) > AUTH_PASSWORD_MAX ||
        strlen(json_string_value(jpw)) != json_string_length(jpw)) {
        rc = gw_http_error_json(wsi, conn, 400, "the password is too long or holds NUL");
        goto out;
    }
    if (jtotp && json_string_length(jtotp) > 10) {
        rc = gw_http_error_json(wsi, conn, 400, "a one-time code has 6 digits");
        goto out;
    }

    char addr[64];
    gw_peer_address(wsi, addr, sizeof(addr));
    char ukey[AUTH_NAME_MAX + 8], akey[80];
    snprintf(ukey, sizeof(ukey), "user:%s", user);
    snprintf(akey, sizeof(akey), "addr:%s", addr);
    int wait_user = 0, wait_addr = 0;
    bool locked_user = false, locked_addr = false;
    int tu = auth_throttle_check(srv->throttle_users, ukey, now_s(), &wait_user, &locked_user);
    int ta = auth_throttle_check(srv->throttle_addrs, akey, now_s(), &wait_addr, &locked_addr);
    if (tu || ta) {
        /* Refused before the password is looked at: the answer is the same
         * whether it was right or not. */
        int wait = wait_user > wait_addr ? wait_user : wait_addr;
        char retry[16], msg[160];
        snprintf(retry, sizeof(retry), "%d", wait);
        snprintf(msg, sizeof(msg), "too many failed logins; try again in %d s", wait);
        srv->metrics.login_throttled++;
        audit(srv, "login.throttled",
              json_pack("{s:s,s:s,s:b,s:i}", "user", user, "source", addr, "locked",
                        locked_user || locked_addr, "retry_after", wait));
        json_t *o = json_pack("{s:s,s:i}", "error", msg, "retry_after", wait);
        char *text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        gw_http_header h[] = {{"retry-after:", retry}, {"cache-control:", "no-store"}};
        rc = gw_http_respond(wsi, conn, 429, "application/json", text, strlen(text), true, h,
                             2, false);
        goto out;
    }

    login_job *job = calloc(1, sizeof(*job));
    if (!job) {
        rc = gw_http_error_json(wsi, conn, 503, "out of memory");
        goto out;
    }
    job->base.run = login_verify;
    job->base.answer = finish_login;
    job->base.free = login_free;
    snprintf(job->user, sizeof(job->user), "%s", user);
    snprintf(job->addr, sizeof(job->addr), "%s", addr);
    job->password_len = json_string_length(jpw);
    memcpy(job->password, json_string_value(jpw), job->password_len);
    if (jtotp) {
        snprintf(job->totp, sizeof(job->totp), "%s", json_string_value(jtotp));
        job->has_totp = true;
    }
    const auth_user *u = auth_users_find(srv->users, user);
    job->known = u && !u->disabled && u->password_hash;
    snprintf(job->hash, sizeof(job->hash), "%s", job->known ? u->password_hash : srv->dummy_hash);
    if (gw_http_job_start(srv, wsi, conn, &job->base) != 0) {
        rc = gw_http_error_json(wsi, conn, 503, "cannot check the password now");
        goto out;
    }
    rc = 0;
out:
    /* The body held the password: wipe its JSON copy too. */
    if (json_is_string(jpw))
        OPENSSL_cleanse((char *)json_string_value(jpw), json_string_length(jpw));
    json_decref(body);
    return rc;
}

/* ---- session endpoints ------------------------------------------------- */

static int api_logout(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_identity *id)
{
    if (id->via_cookie) {
        auth_session_delete(srv->store, id->session_id);
        /* The consoles opened on this login end with it. */
        gw_sessions_terminate_login(&srv->sessions, id->session_id, "you logged out");
    }
    char addr[64];
    gw_peer_address(wsi, addr, sizeof(addr));
    audit(srv, "logout", json_pack("{s:s,s:s}", "user", id->user, "source", addr));
    gw_http_header hdrs[] = {
        {"set-cookie:", GW_SESSION_COOKIE "=; Path=/; Secure; HttpOnly; SameSite=Strict; "
                        "Max-Age=0"},
        {"cache-control:", "no-store"}};
    return gw_http_respond(wsi, conn, 200, "application/json", "{\"ok\":true}", 11, false, hdrs,
                           2, false);
}

static json_t *reachable_vms(gw_server *srv, const gw_identity *id)
{
    json_t *list = json_array();
    const unsigned vm_actions = AUTH_ACT_SSH_LOGIN | AUTH_ACT_SSH_ADMIN_LOGIN |
                                AUTH_ACT_RDP_LOGIN | AUTH_ACT_RDP_ADMIN_LOGIN | AUTH_ACT_TUNNEL;
    for (size_t i = 0; i < srv->cfg->nvms; i++) {
        const gw_vm *vm = &srv->cfg->vms[i];
        unsigned acts = gw_identity_actions(srv, id, vm) & vm_actions;
        if (!vm->ssh.enabled)
            acts &= ~(AUTH_ACT_SSH_LOGIN | AUTH_ACT_SSH_ADMIN_LOGIN);
        if (!vm->rdp.enabled)
            acts &= ~(AUTH_ACT_RDP_LOGIN | AUTH_ACT_RDP_ADMIN_LOGIN);
        if (!acts)
            continue;
        json_t *tags = json_array(), *protos = json_array();
        for (size_t t = 0; t < vm->ntags; t++)
            json_array_append_new(tags, json_string(vm->tags[t]));
        if (vm->ssh.enabled)
            json_array_append_new(protos, json_string("ssh"));
        if (vm->rdp.enabled)
            json_array_append_new(protos, json_string("rdp"));
        /* The ports, so that `postern ssh NAME` and `postern rdp NAME`
         * need not be told. */
        json_t *ports = json_object();
        if (vm->ssh.enabled)
            json_object_set_new(ports, "ssh", json_integer(vm->ssh.port));
        if (vm->rdp.enabled)
            json_object_set_new(ports, "rdp", json_integer(vm->rdp.port));
        json_array_append_new(list, json_pack("{s:s,s:o,s:o,s:o,s:b,s:o}", "name", vm->name,
                                              "tags", tags, "protocols", protos, "actions",
                                              action_array(acts), "jit_required",
                                              vm->jit.required, "ports", ports));
    }
    return list;
}

static int api_me(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_identity *id)
{
    unsigned global = 0;
    const unsigned global_actions = AUTH_ACT_AUDITOR | AUTH_ACT_APPROVER | AUTH_ACT_ADMIN;
    char why[256];
    for (unsigned bit = AUTH_ACT_AUDITOR; bit <= AUTH_ACT_ADMIN; bit <<= 1)
        if ((bit & global_actions) && auth_may(srv->cfg->roles, srv->cfg->nroles, id->account,
                                               bit, NULL, why, sizeof(why)) == 0)
            global |= bit;
    global &= id->allowed_actions;
    json_t *body = json_pack(
        "{s:s,s:o,s:b,s:b,s:s,s:o,s:o,s:b}", "user", id->user, "roles",
        str_array(id->account->roles, id->account->nroles), "mfa", id->mfa, "mfa_enrolled",
        id->account->totp_key_len > 0, "auth", id->via_token ? "token" : "session", "actions",
        action_array(global), "vms", reachable_vms(srv, id), "auditor",
        (global & AUTH_ACT_AUDITOR) != 0);
    return gw_http_json(wsi, conn, 200, body);
}

static int api_vms(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_identity *id)
{
    return gw_http_json(wsi, conn, 200, json_pack("{s:o}", "vms", reachable_vms(srv, id)));
}

/* ---- tokens ------------------------------------------------------------- */

static int api_token_create(gw_server *srv, struct lws *wsi, gw_http_conn *conn,
                            gw_identity *id)
{
    if (!id->via_cookie)
        return gw_http_error_json(wsi, conn, 403,
                                  "tokens are issued to a logged-in browser or `postern "
                                  "login`, not to another token");
    if (id->account->totp_key_len && !id->mfa)
        return gw_http_error_json(wsi, conn, 403, "log in with your one-time code first");
    json_t *body = NULL;
    const char *err = conn->req_len ? gw_http_json_body(conn, &body) : NULL;
    if (err)
        return gw_http_error_json(wsi, conn, 400, err);
    int rc;
    const char *name = body ? json_str(body, "name") : NULL;
    json_t *jexp = body ? json_object_get(body, "expires_in") : NULL;
    json_t *jacts = body ? json_object_get(body, "actions") : NULL;
    int64_t max = srv->cfg->auth.token_max_seconds;
    int64_t expires_in = max;
    unsigned actions = 0;
    if (name && !auth_name_valid(name)) {
        rc = gw_http_error_json(wsi, conn, 400,
                                "a token name is 1 to 64 letters, digits, '.', '_', '-', '@'");
        goto out;
    }
    if (jexp && (!json_is_integer(jexp) || json_integer_value(jexp) < GW_TOKEN_MIN_SECONDS ||
                 json_integer_value(jexp) > max)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "expected expires_in in seconds, from %d to %lld",
                 GW_TOKEN_MIN_SECONDS, (long long)max);
        rc = gw_http_error_json(wsi, conn, 400, msg);
        goto out;
    }
    if (jexp)
        expires_in = json_integer_value(jexp);
    if (jacts) {
        if (!json_is_array(jacts) || json_array_size(jacts) == 0) {
            rc = gw_http_error_json(wsi, conn, 400, "expected actions to be a list of actions");
            goto out;
        }
        for (size_t i = 0; i < json_array_size(jacts); i++) {
            json_t *a = json_array_get(jacts, i);
            unsigned f = json_is_string(a) ? auth_action_parse(json_string_value(a)) : 0;
            if (!f) {
                rc = gw_http_error_json(wsi, conn, 400, "unknown action in actions");
                goto out;
            }
            actions |= f;
        }
    }
    char token[AUTH_TOKEN_MAX];
    auth_token t;
    int64_t now = now_s();
    int crc = auth_token_create(srv->store, id->user, name ? name : "cli", actions, now,
                                now + expires_in, token, &t);
    if (crc == PST_E_LIMIT) {
        rc = gw_http_error_json(wsi, conn, 409, "too many live tokens; revoke some first");
        goto out;
    }
    if (crc != 0) {
        rc = gw_http_error_json(wsi, conn, 500, "cannot issue a token");
        goto out;
    }
    char addr[64];
    gw_peer_address(wsi, addr, sizeof(addr));
    if (audit(srv, "token.issued",
              json_pack("{s:s,s:s,s:s,s:s,s:I}", "user", id->user, "token_id", t.id, "name",
                        t.name, "source", addr, "expires", (json_int_t)t.expires)) != 0) {
        auth_token_revoke(srv->store, id->user, t.id);
        OPENSSL_cleanse(token, sizeof(token));
        rc = gw_http_error_json(wsi, conn, 503, "the audit log cannot be written");
        goto out;
    }
    rc = gw_http_json(wsi, conn, 201,
                      json_pack("{s:s,s:s,s:s,s:I,s:o}", "token", token, "id", t.id, "name",
                                t.name, "expires", (json_int_t)t.expires, "actions",
                                actions ? action_array(actions) : json_array()));
    OPENSSL_cleanse(token, sizeof(token));
out:
    json_decref(body);
    return rc;
}

static int api_token_list(gw_server *srv, struct lws *wsi, gw_http_conn *conn,
                          gw_identity *id)
{
    json_t *list = NULL;
    if (auth_token_list(srv->store, id->user, now_s(), &list) != 0)
        return gw_http_error_json(wsi, conn, 500, "cannot list tokens");
    return gw_http_json(wsi, conn, 200, json_pack("{s:o}", "tokens", list));
}

static int api_token_revoke(gw_server *srv, struct lws *wsi, gw_http_conn *conn,
                            gw_identity *id, const char *token_id)
{
    if (strlen(token_id) != AUTH_TOKEN_ID_LEN || strspn(token_id, "0123456789abcdef") !=
                                                     AUTH_TOKEN_ID_LEN)
        return gw_http_error_json(wsi, conn, 404, "no such token");
    if (auth_token_revoke(srv->store, id->user, token_id) != 0)
        return gw_http_error_json(wsi, conn, 404, "no such token");
    char addr[64];
    gw_peer_address(wsi, addr, sizeof(addr));
    audit(srv, "token.revoked",
          json_pack("{s:s,s:s,s:s}", "user", id->user, "token_id", token_id, "source", addr));
    return gw_http_json(wsi, conn, 200, json_pack("{s:b}", "revoked", 1));
}

/* ---- dispatch ------------------------------------------------------------ */

int gw_api_route(gw_server *srv, struct lws *wsi, gw_http_conn *conn)
{
    const char *path = conn->path;
    int m = conn->method;
    bool get = m == LWSHUMETH_GET, post = m == LWSHUMETH_POST, del = m == LWSHUMETH_DELETE;
    bool changes = !get && m != LWSHUMETH_HEAD;

    if (strcmp(path, "/api/login") == 0) {
        if (!post)
            return gw_http_error_json(wsi, conn, 405, "use POST");
        /* A browser always sends Origin on POST; the CLI sends none. */
        if (gw_origin_check(srv, wsi, false) != 0)
            return gw_http_error_json(wsi, conn, 403, "request from a foreign origin");
        return api_login(srv, wsi, conn);
    }

    /* The API's shape is public: an unknown path is a 404 for everyone. */
    static const char *const known[] = {"/api/logout", "/api/me", "/api/vms", "/api/tokens",
                                        NULL};
    bool is_known = strncmp(path, "/api/tokens/", 12) == 0 ||
                    strcmp(path, "/api/recordings") == 0 ||
                    strncmp(path, "/api/recordings/", 16) == 0;
    for (const char *const *k = known; *k && !is_known; k++)
        is_known = strcmp(path, *k) == 0;
    if (!is_known)
        return gw_http_error_json(wsi, conn, 404, "no such API endpoint");

    gw_identity id;
    if (gw_identify(srv, wsi, &id) != 0)
        return gw_http_error_json(wsi, conn, 401, "not logged in, or the session expired");
    /* Cookies ride along on cross-site requests; a token does not. So a
     * state-changing request on a cookie must come from our own origin. */
    if (changes && gw_origin_check(srv, wsi, id.via_cookie) != 0)
        return gw_http_error_json(wsi, conn, 403, "request from a foreign origin");

    if (strncmp(path, "/api/recordings", 15) == 0)
        return gw_api_recordings(srv, wsi, conn, &id);
    if (strcmp(path, "/api/logout") == 0)
        return post ? api_logout(srv, wsi, conn, &id)
                    : gw_http_error_json(wsi, conn, 405, "use POST");
    if (strcmp(path, "/api/me") == 0)
        return get ? api_me(srv, wsi, conn, &id) : gw_http_error_json(wsi, conn, 405, "use GET");
    if (strcmp(path, "/api/vms") == 0)
        return get ? api_vms(srv, wsi, conn, &id) : gw_http_error_json(wsi, conn, 405, "use GET");
    if (strcmp(path, "/api/tokens") == 0) {
        if (post)
            return api_token_create(srv, wsi, conn, &id);
        if (get)
            return api_token_list(srv, wsi, conn, &id);
        return gw_http_error_json(wsi, conn, 405, "use GET or POST");
    }
    if (strncmp(path, "/api/tokens/", 12) == 0) {
        if (!del)
            return gw_http_error_json(wsi, conn, 405, "use DELETE");
        return api_token_revoke(srv, wsi, conn, &id, path + 12);
    }
    return gw_http_error_json(wsi, conn, 404, "no such API endpoint");
}
