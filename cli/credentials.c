/* The stored login: see credentials.h. */
#include "cli/credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int config_dir(char *out, size_t len)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(out, len, "%s/postern", xdg);
    else if (home && home[0])
        n = snprintf(out, len, "%s/.config/postern", home);
    else
        return -1;
    return n > 0 && (size_t)n < len ? 0 : -1;
}

int cli_credentials_path(char *out, size_t len)
{
    char dir[900];
    if (config_dir(dir, sizeof(dir)) != 0)
        return -1;
    int n = snprintf(out, len, "%s/credentials.json", dir);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static void copy_field(json_t *o, const char *key, char *out, size_t len)
{
    json_t *v = json_object_get(o, key);
    if (json_is_string(v))
        snprintf(out, len, "%s", json_string_value(v));
}

int cli_credentials_load(cli_credentials *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    char path[1024];
    if (cli_credentials_path(path, sizeof(path)) != 0)
        return 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, "postern: warning: %s is readable by others (chmod 600 it)\n", path);
    json_error_t je;
    json_t *j = json_loadfd(fd, 0, &je);
    close(fd);
    if (!json_is_object(j)) {
        snprintf(err, errlen, "%s is not valid (%s): run `postern login` again", path, je.text);
        json_decref(j);
        return -1;
    }
    copy_field(j, "gateway", c->gateway, sizeof(c->gateway));
    copy_field(j, "user", c->user, sizeof(c->user));
    copy_field(j, "token", c->token, sizeof(c->token));
    copy_field(j, "token_id", c->token_id, sizeof(c->token_id));
    copy_field(j, "ca_file", c->ca_file, sizeof(c->ca_file));
    copy_field(j, "pin", c->pin, sizeof(c->pin));
    json_t *e = json_object_get(j, "expires");
    c->expires = json_is_integer(e) ? (int64_t)json_integer_value(e) : 0;
    /* json_loadfd's copy of the token is freed here: wipe it first. */
    json_t *tok = json_object_get(j, "token");
    if (json_is_string(tok))
        OPENSSL_cleanse((char *)json_string_value(tok), json_string_length(tok));
    json_decref(j);
    if (!c->gateway[0] || !c->token[0]) {
        snprintf(err, errlen, "%s has no gateway or token: run `postern login` again", path);
        cli_credentials_wipe(c);
        return -1;
    }
    return 0;
}

int cli_credentials_save(const cli_credentials *c, char *err, size_t errlen)
{
    char dir[900], path[1024], tmp[1100];
    if (config_dir(dir, sizeof(dir)) != 0 || cli_credentials_path(path, sizeof(path)) != 0) {
        snprintf(err, errlen, "no HOME or XDG_CONFIG_HOME to store the login in");
        return -1;
    }
    /* ~/.config may not exist yet; postern's own directory is private. */
    char parent[900];
    snprintf(parent, sizeof(parent), "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if (mkdir(parent, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %s: %s", parent, strerror(errno));
            return -1;
        }
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    chmod(dir, 0700);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:I}", "gateway", c->gateway, "user", c->user,
                          "token", c->token, "token_id", c->token_id, "expires",
                          (json_int_t)c->expires);
    if (j && c->ca_file[0])
        json_object_set_new(j, "ca_file", json_string(c->ca_file));
    if (j && c->pin[0])
        json_object_set_new(j, "pin", json_string(c->pin));
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    int rc = -1;
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot replace %s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    return rc;
}

int cli_credentials_remove(char *err, size_t errlen)
{
    char path[1024];
    if (cli_credentials_path(path, sizeof(path)) != 0)
        return 0;
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void cli_credentials_wipe(cli_credentials *c)
{
    OPENSSL_cleanse(c->token, sizeof(c->token));
}
