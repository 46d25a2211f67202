/* vmkit guest agent: shared declarations (see main.c for the protocol). */
#ifndef VMKIT_AGENT_H
#define VMKIT_AGENT_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer. */
struct buf {
  char *data;
  size_t len, cap;
};
void buf_add(struct buf *b, const void *data, size_t len);
void buf_printf(struct buf *b, const char *format, ...) __attribute__((format(printf, 2, 3)));
void buf_drop(struct buf *b, size_t count); /* removes the first count bytes */
void buf_free(struct buf *b);

/* codec.c: base64 (standard alphabet, padded) and MD5. */
void base64_encode(struct buf *out, const void *data, size_t len);
/* Decodes into a new NUL-terminated string; NULL when the text is not base64. */
char *base64_decode(const char *text, size_t *len);

struct md5 {
  uint32_t state[4];
  uint64_t bytes;
  unsigned char block[64];
};
void md5_init(struct md5 *m);
void md5_update(struct md5 *m, const void *data, size_t len);
void md5_hex(struct md5 *m, char hex[33]);

/* transfer.c: run in a forked child; stdout carries whole protocol lines for the command
 * channel, stderr the error message; the exit status is the reply's status. */
int receive_file(long id, long size, const char *base64_path, int transfer);
int send_file(long id, const char *base64_path, int transfer);

/* identity.c: request T (see main.c); failures are described in err. Returns the status. */
int set_identity(long seconds, const char *fields, struct buf *err);

#endif
