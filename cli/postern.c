/* postern: the command-line client.
 *
 *   postern user add NAME --role ROLE [--role ROLE...] --users-file FILE [--password-stdin]
 *   postern user passwd NAME --users-file FILE [--password-stdin]
 *   postern user disable|enable NAME --users-file FILE
 *   postern user totp NAME --users-file FILE [--issuer NAME]
 *   postern user list --users-file FILE
 *   postern audit verify FILE
 *   postern recording verify [--public-key PEM_FILE | --state-dir DIR] FILE...
 *   postern recording public-key --state-dir DIR
 *   postern login | logout | status | tunnel | ssh | rdp ... (cli/remote.h)
 *
 * User commands edit the users file atomically and never print a secret
 * other than the TOTP enrolment URI they exist to show. A running gateway
 * picks changes up on SIGHUP. Recording commands only read. */
#include "auth/auth.h"
#include "cli/remote.h"
#include "recording/recording.h"

#include "common/err.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define EXIT_USAGE 2

typedef struct {
    const char *users_file;
    const char *roles[16];
    size_t nroles;
    bool password_stdin;
    const char *issuer;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: postern user add NAME --role ROLE [--role ROLE...] --users-file FILE\n"
            "                        [--password-stdin]\n"
            "       postern user passwd NAME --users-file FILE [--password-stdin]\n"
            "       postern user disable NAME --users-file FILE\n"
            "       postern user enable NAME --users-file FILE\n"
            "       postern user totp NAME --users-file FILE [--issuer NAME]\n"
            "       postern user list --users-file FILE\n"
            "       postern audit verify FILE\n"
            "       postern recording verify [--public-key PEM_FILE | --state-dir DIR] FILE...\n"
            "       postern recording public-key --state-dir DIR\n"
            "       postern --version\n"
            "       postern COMMAND --help\n"
            "\nTo reach VMs through a gateway (each command's --help says more):\n");
    cli_remote_usage(f);
}

static int parse_options(int argc, char **argv, int first, options *o)
{
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--users-file") == 0 && i + 1 < argc) {
            o->users_file = argv[++i];
        } else if (strcmp(argv[i], "--role") == 0 && i + 1 < argc) {
            if (o->nroles == sizeof(o->roles) / sizeof(o->roles[0])) {
                fprintf(stderr, "postern: too many --role options\n");
                return -1;
            }
            o->roles[o->nroles++] = argv[++i];
        } else if (strcmp(argv[i], "--password-stdin") == 0) {
            o->password_stdin = true;
        } else if (strcmp(argv[i], "--issuer") == 0 && i + 1 < argc) {
            o->issuer = argv[++i];
        } else {
            fprintf(stderr, "postern: unexpected argument '%s'\n", argv[i]);
            return -1;
        }
    }
    if (!o->users_file) {
        fprintf(stderr, "postern: --users-file FILE is required\n");
        return -1;
    }
    return 0;
}

/* Reads one line without echo (prompt on the terminal) or from stdin. */
static int read_secret(const char *prompt, bool from_stdin, char *buf, size_t len)
{
    struct termios old, quiet;
    bool tty = !from_stdin && isatty(STDIN_FILENO);
    if (!from_stdin && !tty) {
        fprintf(stderr, "postern: no terminal to ask for a password; use --password-stdin\n");
        return -1;
    }
    if (tty) {
        fprintf(stderr, "%s", prompt);
        tcgetattr(STDIN_FILENO, &old);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *ok = fgets(buf, (int)len, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (!ok)
        return -1;
    size_t n = strlen(buf);
    if (n == len - 1 && buf[n - 1] != '\n') {
        fprintf(stderr, "postern: password longer than %d bytes\n", AUTH_PASSWORD_MAX);
        return -1;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return 0;
}

static int ask_new_password(bool from_stdin, char *hash, size_t hashlen)
{
    char pw[AUTH_PASSWORD_MAX + 2], again[AUTH_PASSWORD_MAX + 2];
    int rc = -1;
    if (read_secret("New password: ", from_stdin, pw, sizeof(pw)) != 0)
        goto out;
    if (!from_stdin) {
        if (read_secret("Repeat it: ", false, again, sizeof(again)) != 0)
            goto out;
        if (strcmp(pw, again) != 0) {
            fprintf(stderr, "postern: the passwords differ\n");
            goto out;
        }
    }
    if (strlen(pw) < 8) {
        fprintf(stderr, "postern: a password needs at least 8 characters\n");
        goto out;
    }
    int hrc = auth_password_hash(pw, strlen(pw), NULL, hash, hashlen);
    if (hrc != 0) {
        fprintf(stderr, "postern: cannot hash the password: %s\n", pst_strerror(hrc));
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(pw, sizeof(pw));
    OPENSSL_cleanse(again, sizeof(again));
    return rc;
}

static int load(const options *o, auth_users **users)
{
    char err[512];
    if (auth_users_load(o->users_file, users, err, sizeof(err)) != 0) {
        fprintf(stderr, "postern: %s\n", err);
        return -1;
    }
    return 0;
}

static int save(const options *o, auth_users *users)
{
    char err[512];
    int rc = auth_users_save(users, o->users_file, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "postern: %s\n", err);
    return rc;
}

static int find(auth_users *users, const char *name, auth_user **u)
{
    *u = auth_users_find(users, name);
    if (!*u) {
        fprintf(stderr, "postern: no user '%s'\n", name);
        return -1;
    }
    return 0;
}

static int user_command(int argc, char **argv)
{
    if (argc < 3) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[2];
    bool list = strcmp(cmd, "list") == 0;
    const char *name = list ? NULL : (argc > 3 ? argv[3] : NULL);
    options o = {0};
    if ((!list && !name) || parse_options(argc, argv, list ? 3 : 4, &o) != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (name && !auth_name_valid(name)) {
        fprintf(stderr, "postern: a user name is 1 to %d letters, digits, '.', '_', '-', '@'\n",
                AUTH_NAME_MAX);
        return EXIT_USAGE;
    }
    auth_users *users;
    if (load(&o, &users) != 0)
        return 1;
    int rc = 1;
    auth_user *u = NULL;
    char hash[AUTH_HASH_MAX];

    if (strcmp(cmd, "add") == 0) {
        if (o.nroles == 0) {
            fprintf(stderr, "postern: give the user a role with --role ROLE\n");
            rc = EXIT_USAGE;
            goto out;
        }
        int arc = auth_users_add(users, name, &u);
        if (arc == -EEXIST) {
            fprintf(stderr, "postern: user '%s' exists; use `postern user passwd`\n", name);
            goto out;
        }
        for (size_t i = 0; arc == 0 && i < o.nroles; i++)
            if ((arc = auth_user_add_role(u, o.roles[i])) == PST_E_PARSE)
                fprintf(stderr, "postern: bad role name '%s'\n", o.roles[i]);
        if (arc != 0 || ask_new_password(o.password_stdin, hash, sizeof(hash)) != 0 ||
            auth_user_set_password_hash(u, hash) != 0 || save(&o, users) != 0)
            goto out;
        printf("added user %s\n", name);
    } else if (strcmp(cmd, "passwd") == 0) {
        if (find(users, name, &u) || ask_new_password(o.password_stdin, hash, sizeof(hash)) ||
            auth_user_set_password_hash(u, hash) || save(&o, users))
            goto out;
        printf("password of %s changed\n", name);
    } else if (strcmp(cmd, "disable") == 0 || strcmp(cmd, "enable") == 0) {
        if (find(users, name, &u))
            goto out;
        u->disabled = cmd[0] == 'd';
        if (save(&o, users))
            goto out;
        printf("user %s %s\n", name, u->disabled ? "disabled" : "enabled");
    } else if (strcmp(cmd, "totp") == 0) {
        if (find(users, name, &u))
            goto out;
        uint8_t key[AUTH_TOTP_KEY_LEN];
        char b32[AUTH_TOTP_KEY_LEN * 2], uri[512];
        if (RAND_bytes(key, sizeof(key)) != 1)
            goto out;
        memcpy(u->totp_key, key, sizeof(key));
        u->totp_key_len = sizeof(key);
        auth_base32_encode(key, sizeof(key), b32, sizeof(b32));
        const char *issuer = o.issuer ? o.issuer : "Postern";
        if (!auth_name_valid(issuer)) {
            fprintf(stderr, "postern: bad issuer name\n");
            goto out;
        }
        if (auth_totp_uri(issuer, name, b32, uri, sizeof(uri)) != 0 || save(&o, users))
            goto out;
        /* The one secret this command prints: it is what enrolment means. */
        printf("%s\n", uri);
        OPENSSL_cleanse(key, sizeof(key));
        OPENSSL_cleanse(b32, sizeof(b32));
        OPENSSL_cleanse(uri, sizeof(uri));
    } else if (list) {
        for (size_t i = 0; i < users->n; i++) {
            const auth_user *x = &users->v[i];
            printf("%s\troles=", x->name);
            for (size_t r = 0; r < x->nroles; r++)
                printf("%s%s", r ? "," : "", x->roles[r]);
            printf("\tpassword=%s\tmfa=%s%s\n", x->password_hash ? "set" : "none",
                   x->totp_key_len ? "totp" : "none", x->disabled ? "\tdisabled" : "");
        }
    } else {
        usage(stderr);
        rc = EXIT_USAGE;
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(hash, sizeof(hash));
    auth_users_free(users);
    return rc;
}

static int audit_command(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[2], "verify") != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    FILE *f = fopen(argv[3], "r");
    if (!f) {
        fprintf(stderr, "postern: cannot open %s: %s\n", argv[3], strerror(errno));
        return 1;
    }
    auth_audit_report rep;
    int rc = auth_audit_verify(f, &rep);
    fclose(f);
    if (rc == 0) {
        printf("%s: OK (%zu events, last sha256 %s)\n", argv[3], rep.lines, rep.last_hash);
        return 0;
    }
    printf("%s: FAILED: %s\n", argv[3], rep.reason);
    return 1;
}

/* The public key for a recording found by its path:
 * <state_dir>/recordings/YYYY/MM/DD/<id>.cast -> <state_dir>/keys/
 * recording.pub. The path as given first (it keeps a symlinked
 * recordings/ folder inside its state directory), then resolved (a bare
 * file name given from inside the day folder). */
static int key_for_path(const char *file, char **pem, char *err, size_t errlen)
{
    char dir[PATH_MAX], real[PATH_MAX];
    if (rec_state_dir_of(file, dir, sizeof(dir)) != 0 &&
        (!realpath(file, real) || rec_state_dir_of(real, dir, sizeof(dir)) != 0)) {
        snprintf(err, errlen, "no public key: the path is not under <state_dir>/recordings/; "
                              "use --public-key or --state-dir");
        return -1;
    }
    return rec_public_key_read(dir, pem, err, errlen);
}

static int recording_verify(int argc, char **argv)
{
    const char *key_file = NULL, *state_dir = NULL;
    int i = 3;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--public-key") == 0 && i + 1 < argc) {
            key_file = argv[++i];
        } else if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc) {
            state_dir = argv[++i];
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "postern: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        } else {
            break;
        }
    }
    if ((key_file && state_dir) || i >= argc) {
        if (key_file && state_dir)
            fprintf(stderr, "postern: give --public-key or --state-dir, not both\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    /* One key for every file when named; else each file's own. */
    char *pem = NULL, keyerr[512] = "";
    if (key_file)
        rec_public_key_read_file(key_file, &pem, keyerr, sizeof(keyerr));
    else if (state_dir)
        rec_public_key_read(state_dir, &pem, keyerr, sizeof(keyerr));

    int rc = 0;
    for (; i < argc; i++) {
        char *own = NULL, detail[512];
        const char *use = pem;
        if (!key_file && !state_dir) {
            keyerr[0] = '\0';
            if (key_for_path(argv[i], &own, keyerr, sizeof(keyerr)) == 0)
                use = own;
        }
        rec_verify_result res = rec_verify_file(argv[i], use, detail, sizeof(detail));
        /* Without a key only UNSIGNED or a read error can be told; say why
         * there was no key rather than just that there was none. */
        if (!use && res == REC_VERIFY_ERROR && keyerr[0])
            snprintf(detail, sizeof(detail), "%s", keyerr);
        if (res == REC_VERIFY_OK)
            printf("%s: OK\n", argv[i]);
        else
            printf("%s: %s (%s)\n", argv[i], rec_verify_result_name(res), detail);
        if (res != REC_VERIFY_OK)
            rc = 1;
        free(own);
    }
    free(pem);
    return rc;
}

static int recording_command(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[2], "verify") == 0)
        return recording_verify(argc, argv);
    if (argc == 5 && strcmp(argv[2], "public-key") == 0 && strcmp(argv[3], "--state-dir") == 0) {
        char *pem = NULL, err[512];
        if (rec_public_key_read(argv[4], &pem, err, sizeof(err)) != 0) {
            fprintf(stderr, "postern: %s\n", err);
            return 1;
        }
        fputs(pem, stdout);
        free(pem);
        return 0;
    }
    usage(stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("postern %s\n", POSTERN_VERSION);
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "user") == 0)
        return user_command(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "audit") == 0)
        return audit_command(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "recording") == 0)
        return recording_command(argc, argv);
    cli_command_fn remote = argc >= 2 ? cli_remote_command(argv[1]) : NULL;
    if (remote)
        return remote(argc - 1, argv + 1);
    if (argc >= 2)
        fprintf(stderr, "postern: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
