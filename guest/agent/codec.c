/* vmkit guest agent: byte buffers, base64 and MD5 (RFC 1321). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

static void buf_reserve(struct buf *b, size_t more) {
  if (b->len + more <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more) cap *= 2;
  char *data = realloc(b->data, cap);
  if (!data) {
    fputs("vmkit agent: out of memory\n", stderr);
    abort();
  }
  b->data = data;
  b->cap = cap;
}

void buf_add(struct buf *b, const void *data, size_t len) {
  if (!len) return;
  buf_reserve(b, len);
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

void buf_printf(struct buf *b, const char *format, ...) {
  va_list args;
  va_start(args, format);
  int need = vsnprintf(NULL, 0, format, args);
  va_end(args);
  buf_reserve(b, (size_t)need + 1);
  va_start(args, format);
  vsnprintf(b->data + b->len, (size_t)need + 1, format, args);
  va_end(args);
  b->len += (size_t)need;
}

void buf_drop(struct buf *b, size_t count) {
  if (count >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + count, b->len - count);
  b->len -= count;
}

void buf_free(struct buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(struct buf *out, const void *data, size_t len) {
  const unsigned char *in = data;
  buf_reserve(out, (len + 2) / 3 * 4);
  char *o = out->data + out->len;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *o++ = ALPHABET[v >> 18];
    *o++ = ALPHABET[v >> 12 & 63];
    *o++ = ALPHABET[v >> 6 & 63];
    *o++ = ALPHABET[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
    *o++ = ALPHABET[v >> 18];
    *o++ = ALPHABET[v >> 12 & 63];
    *o++ = i + 1 < len ? ALPHABET[v >> 6 & 63] : '=';
    *o++ = '=';
  }
  out->len = (size_t)(o - out->data);
}

char *base64_decode(const char *text, size_t *len) {
  size_t n = strlen(text);
  if (n % 4) return NULL;
  char *out = malloc(n / 4 * 3 + 1);
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      char c = text[i + k];
      const char *at = c ? strchr(ALPHABET, c) : NULL;
      if (c == '=' && i + 4 == n && k >= 2 && (k == 3 || text[i + 3] == '=')) {
        pad++;
        v <<= 6;
      } else if (at && !pad) {
        v = v << 6 | (uint32_t)(at - ALPHABET);
      } else {
        free(out);
        return NULL;
      }
    }
    out[o++] = (char)(v >> 16);
    if (pad < 2) out[o++] = (char)(v >> 8 & 255);
    if (pad < 1) out[o++] = (char)(v & 255);
  }
  out[o] = 0;
  if (len) *len = o;
  return out;
}

static const uint32_t K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
static const unsigned char SHIFT[16] = {7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21};

static void md5_block(struct md5 *m, const unsigned char *p) {
  uint32_t w[16];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[i * 4] | (uint32_t)p[i * 4 + 1] << 8 | (uint32_t)p[i * 4 + 2] << 16 |
           (uint32_t)p[i * 4 + 3] << 24;
  uint32_t a = m->state[0], b = m->state[1], c = m->state[2], d = m->state[3];
  for (int i = 0; i < 64; i++) {
    uint32_t f;
    int g;
    if (i < 16) f = (b & c) | (~b & d), g = i;
    else if (i < 32) f = (d & b) | (~d & c), g = (5 * i + 1) % 16;
    else if (i < 48) f = b ^ c ^ d, g = (3 * i + 5) % 16;
    else f = c ^ (b | ~d), g = (7 * i) % 16;
    uint32_t t = d;
    d = c;
    c = b;
    uint32_t x = a + f + K[i] + w[g];
    int s = SHIFT[(i / 16) * 4 + i % 4];
    b = b + (x << s | x >> (32 - s));
    a = t;
  }
  m->state[0] += a;
  m->state[1] += b;
  m->state[2] += c;
  m->state[3] += d;
}

void md5_init(struct md5 *m) {
  m->state[0] = 0x67452301;
  m->state[1] = 0xefcdab89;
  m->state[2] = 0x98badcfe;
  m->state[3] = 0x10325476;
  m->bytes = 0;
}

void md5_update(struct md5 *m, const void *data, size_t len) {
  const unsigned char *p = data;
  size_t used = m->bytes % 64;
  m->bytes += len;
  if (used) {
    size_t take = 64 - used < len ? 64 - used : len;
    memcpy(m->block + used, p, take);
    p += take;
    len -= take;
    if (used + take < 64) return;
    md5_block(m, m->block);
  }
  for (; len >= 64; p += 64, len -= 64) md5_block(m, p);
  memcpy(m->block, p, len);
}

void md5_hex(struct md5 *m, char hex[33]) {
  uint64_t bits = m->bytes * 8;
  unsigned char pad[72] = {0x80};
  size_t used = m->bytes % 64;
  size_t padding = used < 56 ? 56 - used : 120 - used;
  for (int i = 0; i < 8; i++) pad[padding + i] = (unsigned char)(bits >> (8 * i));
  md5_update(m, pad, padding + 8);
  for (int i = 0; i < 16; i++)
    snprintf(hex + i * 2, 3, "%02x", (unsigned)(m->state[i / 4] >> (8 * (i % 4)) & 255));
}
