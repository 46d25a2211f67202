/* vmkit guest agent: file transfers on the vmkit.transfer port, each in a forked child.
 *
 * File bytes always travel in whole frames:
 *   <<<VMKIT:XFER <id> <size>>>>\n   then exactly <size> bytes   then <md5 hex, or FAILED>\n
 * Both ends write and read whole frames whatever fails, and a frame for another id is skipped
 * whole, so a failed transfer can never shift the bytes of the next one. An upload lands in a
 * temporary file beside its target, renamed into place only when its checksum matches. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

static int fail(const char *format, const char *path) {
  fputs("vmkit backdoor: ", stderr);
  fprintf(stderr, format, path);
  fputc('\n', stderr);
  return 1;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* One line, read a byte at a time: whatever follows it stays in the port for the next reader. */
static int read_line(int fd, char *line, size_t size) {
  size_t n = 0;
  for (;;) {
    char c;
    ssize_t got = read(fd, &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    if (c == '\n') break;
    if (n + 1 < size) line[n++] = c;
  }
  line[n] = 0;
  return 0;
}

/* Reads `size` bytes into `sink` (NULL: discard) and the checksum; returns -1 when the port ends. */
static int take_bytes(int fd, long size, int sink, struct md5 *sum, int *sink_failed) {
  static char chunk[65536];
  while (size > 0) {
    ssize_t n = read(fd, chunk, size < (long)sizeof chunk ? (size_t)size : sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    if (sum) md5_update(sum, chunk, (size_t)n);
    if (sink >= 0 && !*sink_failed && write_all(sink, chunk, (size_t)n) < 0) *sink_failed = 1;
    size -= n;
  }
  return 0;
}

/* Reads frame headers until the one for transfer `id`; skips whole frames of other transfers. */
static int next_frame(int fd, long id, long *size) {
  char line[256];
  while (read_line(fd, line, sizeof line) == 0) {
    long frame, bytes;
    char end[4] = "";
    if (sscanf(line, "<<<VMKIT:XFER %ld %ld%3s", &frame, &bytes, end) != 3 || strcmp(end, ">>>"))
      continue;
    if (frame == id) {
      *size = bytes;
      return 0;
    }
    int ignored = 0;
    if (take_bytes(fd, bytes, -1, NULL, &ignored) < 0 || read_line(fd, line, sizeof line) < 0) return -1;
  }
  return -1;
}

int receive_file(long id, long size, const char *base64_path, int transfer) {
  if (transfer < 0) return fail("%sno transfer port", "");
  char *path = base64_decode(base64_path, NULL);
  if (!path || !*path) return fail("not a base64 path: %s", base64_path);
  struct stat st;
  int exists = stat(path, &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) return fail("cannot write %s: it is a directory", path);
  char part[4200];
  snprintf(part, sizeof part, "%s.vmkit-part-%ld", path, id);
  int out = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (out < 0) return fail("cannot write %s", path);
  printf("<<<VMKIT:GO %ld>>>\n", id);
  fflush(stdout);
  long framed;
  struct md5 sum;
  md5_init(&sum);
  int write_failed = 0;
  char expected[64];
  if (next_frame(transfer, id, &framed) < 0 || take_bytes(transfer, framed, out, &sum, &write_failed) < 0 ||
      read_line(transfer, expected, sizeof expected) < 0) {
    unlink(part);
    return fail("%sthe transfer port closed", "");
  }
  if (close(out) < 0) write_failed = 1;
  char hex[33];
  md5_hex(&sum, hex);
  if (write_failed || framed != size) {
    unlink(part);
    return fail("writing %s failed", path);
  }
  if (!strcmp(expected, "FAILED")) {
    unlink(part);
    return fail("%sthe host could not read the whole file", "");
  }
  if (strcmp(expected, hex)) {
    unlink(part);
    fprintf(stderr, "vmkit backdoor: checksum mismatch (received %s, sent %s)\n", hex, expected);
    return 1;
  }
  /* An existing file keeps its permissions. */
  if (exists) chmod(part, st.st_mode & 07777);
  if (rename(part, path) < 0) {
    unlink(part);
    return fail("cannot replace %s", path);
  }
  return 0;
}

int send_file(long id, const char *base64_path, int transfer) {
  char *path = base64_decode(base64_path, NULL);
  if (!path || !*path) return fail("not a base64 path: %s", base64_path);
  if (transfer < 0) return fail("%sno transfer port", "");
  int in = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (in < 0 || fstat(in, &st) < 0 || !S_ISREG(st.st_mode))
    return fail("cannot read %s: not a readable regular file", path);
  static char chunk[65536];
  struct md5 sum;
  md5_init(&sum);
  ssize_t n;
  while ((n = read(in, chunk, sizeof chunk)) > 0) md5_update(&sum, chunk, (size_t)n);
  if (n < 0) return fail("cannot read %s", path);
  char hex[33];
  md5_hex(&sum, hex);
  long size = (long)st.st_size;
  printf("<<<VMKIT:SEND %ld %ld>>>\n", id, size);
  fflush(stdout);
  char header[128];
  int len = snprintf(header, sizeof header, "<<<VMKIT:XFER %ld %ld>>>\n", id, size);
  if (write_all(transfer, header, (size_t)len) < 0) return fail("writing the frame of %s failed", path);
  /* Exactly <size> bytes even if the file shrinks meanwhile; the checksum then tells. */
  lseek(in, 0, SEEK_SET);
  for (long left = size; left > 0;) {
    n = read(in, chunk, left < (long)sizeof chunk ? (size_t)left : sizeof chunk);
    if (n <= 0) {
      n = left < (long)sizeof chunk ? left : (long)sizeof chunk;
      memset(chunk, 0, (size_t)n);
    }
    if (write_all(transfer, chunk, (size_t)n) < 0) return fail("writing the frame of %s failed", path);
    left -= n;
  }
  char trailer[40];
  len = snprintf(trailer, sizeof trailer, "%s\n", hex);
  if (write_all(transfer, trailer, (size_t)len) < 0) return fail("writing the frame of %s failed", path);
  return 0;
}
