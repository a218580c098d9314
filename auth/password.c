/* Password hashing with argon2id (memory-hard). The parameters travel in
 * each encoded hash ("$argon2id$v=19$m=...,t=...,p=...$salt$hash"), so
 * raising them later only changes new hashes; old ones still verify. */
#include "auth/auth.h"

#include "common/err.h"

#include <argon2.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>

#define SALT_LEN 16
#define HASH_LEN 32

const auth_kdf_params auth_kdf_default = {
    .t_cost = 2,
    .m_cost_kib = 19456, /* 19 MiB */
    .parallelism = 1,
};

int auth_password_hash(const char *password, size_t len, const auth_kdf_params *p,
                       char *out, size_t outlen)
{
    uint8_t salt[SALT_LEN];
    if (!p)
        p = &auth_kdf_default;
    if (len > AUTH_PASSWORD_MAX)
        return -EMSGSIZE;
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return PST_E_CRYPTO;
    size_t need = argon2_encodedlen(p->t_cost, p->m_cost_kib, p->parallelism, SALT_LEN,
                                    HASH_LEN, Argon2_id);
    if (need > outlen)
        return -ENOSPC;
    int rc = argon2id_hash_encoded(p->t_cost, p->m_cost_kib, p->parallelism, password, len,
                                   salt, sizeof(salt), HASH_LEN, out, outlen);
    return rc == ARGON2_OK ? 0 : PST_E_CRYPTO;
}

int auth_password_verify(const char *encoded, const char *password, size_t len)
{
    if (!encoded || strncmp(encoded, "$argon2id$", 10) != 0)
        return PST_E_PARSE;
    if (len > AUTH_PASSWORD_MAX)
        return PST_E_DENIED;
    int rc = argon2id_verify(encoded, password, len);
    if (rc == ARGON2_OK)
        return 0;
    if (rc == ARGON2_VERIFY_MISMATCH)
        return PST_E_DENIED;
    return PST_E_PARSE;
}

/* Unknown users are checked against this hash of a random value, so that a
 * login for a name that does not exist costs the same time as a wrong
 * password: the response time does not tell which names exist. */
int auth_password_dummy_hash(char *out, size_t outlen)
{
    uint8_t random_pw[32];
    if (RAND_bytes(random_pw, sizeof(random_pw)) != 1)
        return PST_E_CRYPTO;
    int rc = auth_password_hash((const char *)random_pw, sizeof(random_pw), NULL, out, outlen);
    OPENSSL_cleanse(random_pw, sizeof(random_pw));
    return rc;
}
