/* Helpers shared inside auth/ only; not part of its public interface. */
#ifndef PST_AUTH_INTERNAL_H
#define PST_AUTH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Writes in[0..len) as characters of alphabet, width bits each (5 for
 * base32, 6 for base64), most significant bits first, without padding,
 * and a NUL. out needs (len * 8 + width - 1) / width + 1 bytes. */
void auth_encode_bits(const uint8_t *in, size_t len, const char *alphabet, int width,
                      char *out);

#endif
