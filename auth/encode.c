#include "auth/internal.h"

void auth_encode_bits(const uint8_t *in, size_t len, const char *alphabet, int width,
                      char *out)
{
    const uint32_t mask = (1u << width) - 1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= width) {
            out[o++] = alphabet[(acc >> (bits - width)) & mask];
            bits -= width;
        }
    }
    if (bits > 0)
        out[o++] = alphabet[(acc << (width - bits)) & mask];
    out[o] = '\0';
}
