/* The gateway's own TLS certificate when the config names none.
 *
 * A self-signed ECDSA P-256 certificate is generated on first start into
 * <state_dir>/tls/{cert,key}.pem and reused after, so that users can pin its
 * fingerprint once. A certificate within 30 days of expiry is replaced (and
 * the new fingerprint logged). Called once at start, before the loop runs:
 * the file I/O here blocks.
 */
#ifndef PST_GATEWAY_TLS_CERT_H
#define PST_GATEWAY_TLS_CERT_H

#include <stdbool.h>
#include <stddef.h>

#define TLS_FINGERPRINT_LEN (32 * 3) /* "AB:CD:...": 95 characters and NUL */
#define TLS_PATH_MAX 4096

/* Makes sure a usable self-signed pair exists under state_dir. hosts are
 * extra names for the certificate's subjectAltName (listen hosts; wildcard
 * addresses are skipped). Fills cert_path/key_path (TLS_PATH_MAX each) and
 * *generated. 0, or a negative code with a message in err. */
int tls_cert_ensure_self_signed(const char *state_dir, const char *const *hosts,
                                size_t nhosts, char *cert_path, char *key_path,
                                bool *generated, char *err, size_t errlen);

/* SHA-256 of the DER form of the first certificate in a PEM file, as
 * uppercase hex pairs joined by ':' (what openssl x509 -fingerprint prints).
 * out holds TLS_FINGERPRINT_LEN bytes. 0, or a negative code with err. */
int tls_cert_fingerprint(const char *cert_path, char *out, char *err, size_t errlen);

/* Checks that cert and key files load and belong together. 0 or negative
 * with a message in err. */
int tls_cert_check_pair(const char *cert_path, const char *key_path, char *err,
                        size_t errlen);

#endif
