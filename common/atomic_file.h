/* Writing a file so that readers see the old content or the new, never a
 * mix: a temporary file beside it (mode given from its first byte), the
 * content, fsync, rename. A crash leaves at worst a stray temporary. */
#ifndef PST_COMMON_ATOMIC_FILE_H
#define PST_COMMON_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* emit writes the content to the stream and returns nonzero on success.
 * 0, or a negative code with a message naming the file in err. */
int pst_write_file_atomic(const char *path, mode_t mode, int (*emit)(FILE *f, void *ctx),
                          void *ctx, char *err, size_t errlen);

#endif
