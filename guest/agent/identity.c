/* vmkit guest agent: request T, a restored guest's identity set without starting a process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

/* Replaces `path` with `text` through a temporary file beside it, as sed -i does. */
static int replace_file(const char *path, const char *text, size_t len) {
  char temporary[128];
  snprintf(temporary, sizeof temporary, "%s.vmkit-new", path);
  int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  int ok = write(fd, text, len) == (ssize_t)len;
  ok = close(fd) == 0 && ok;
  if (ok && rename(temporary, path) == 0) return 0;
  int saved = errno;
  unlink(temporary);
  errno = saved;
  return -1;
}

/* /etc/hostname, and the name on 127.0.1.1 in /etc/hosts (else sudo looks it up in DNS). */
static void write_hostname_files(const char *name, struct buf *err) {
  struct buf text = {0};
  buf_printf(&text, "%s\n", name);
  if (replace_file("/etc/hostname", text.data, text.len) < 0)
    buf_printf(err, "/etc/hostname: %s\n", strerror(errno));
  text.len = 0;
  FILE *hosts = fopen("/etc/hosts", "re");
  char line[4096];
  while (hosts && fgets(line, sizeof line, hosts)) {
    if (!strncmp(line, "127.0.1.1", 9) && (line[9] == ' ' || line[9] == '\t')) continue;
    buf_add(&text, line, strlen(line));
  }
  if (hosts) fclose(hosts);
  if (text.len && text.data[text.len - 1] != '\n') buf_add(&text, "\n", 1);
  buf_printf(&text, "127.0.1.1\t%s\n", name);
  if (replace_file("/etc/hosts", text.data, text.len) < 0) buf_printf(err, "/etc/hosts: %s\n", strerror(errno));
  buf_free(&text);
}

static int is_folder(const char *path) {
  struct stat folder;
  return stat(path, &folder) == 0 && S_ISDIR(folder.st_mode);
}

/* In the journal's folder the new id's entry leads where the old id's does. With a persistent
 * journal that is /var/log/journal alone, where the old id's folder may not be there yet (journald
 * makes it when it first flushes, maybe after this); the volatile one's folder is removed at that
 * flush, and a link to it would dangle. Without one, the volatile journal is the journal. */
static void link_journal_folders(const char *old, const char *id, struct buf *err) {
  static const char *const bases[] = {"/var/log/journal", "/run/log/journal"};
  for (size_t i = 0; i < sizeof bases / sizeof *bases; i++) {
    if (!is_folder(bases[i]) || (i > 0 && is_folder(bases[0]))) continue;
    char from[96], to[96], target[64];
    snprintf(from, sizeof from, "%s/%s", bases[i], old);
    ssize_t length = readlink(from, target, sizeof target - 1);
    if (length > 0)
      target[length] = 0; /* a link made by an earlier identity request: to the folder itself */
    else
      snprintf(target, sizeof target, "%s", old);
    snprintf(to, sizeof to, "%s/%s", bases[i], id);
    if (symlink(target, to) < 0 && errno != EEXIST) buf_printf(err, "%s: %s\n", to, strerror(errno));
  }
}

/* A new /etc/machine-id. journald keeps writing under the id it started with, and journalctl
 * reads only the folders of the id in the file: those folders are made links to journald's, so
 * the whole journal, boot included, stays in view. */
static void set_machine_id(const char *id, struct buf *err) {
  char old[64] = "";
  FILE *file = fopen("/etc/machine-id", "re");
  if (file) {
    if (!fgets(old, sizeof old, file)) old[0] = 0;
    fclose(file);
  }
  old[strcspn(old, "\n")] = 0;
  if (!strcmp(old, id)) return;
  char text[80];
  snprintf(text, sizeof text, "%s\n", id);
  if (replace_file("/etc/machine-id", text, strlen(text)) < 0) {
    buf_printf(err, "/etc/machine-id: %s\n", strerror(errno));
    return;
  }
  if (strlen(old) == 32 && !strchr(old, '/')) link_journal_folders(old, id, err);
}

/* linux/random.h's RNDADDENTROPY and RNDRESEEDCRNG, spelled out: musl's headers leave them out. */
struct entropy_pool {
  int entropy_count; /* bits credited */
  int buf_size;
  unsigned char buf[1024];
};
#define ADD_ENTROPY _IOW('R', 0x03, int[2])
#define RESEED _IO('R', 0x07)

/* Mixes `bytes` into the kernel's pool and credits them; a kernel that refuses the credit
 * (no CAP_SYS_ADMIN, say) still mixes what is written to /dev/urandom. Then the random number
 * generator reseeds from the pool at once: else clones of one saved state would go on drawing
 * the same bytes until its next scheduled reseed (up to a minute on Linux 6.1). */
static void add_entropy(const char *bytes, size_t len, struct buf *err) {
  struct entropy_pool pool;
  if (len > sizeof pool.buf) len = sizeof pool.buf;
  pool.entropy_count = (int)len * 8;
  pool.buf_size = (int)len;
  memcpy(pool.buf, bytes, len);
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    buf_printf(err, "/dev/urandom: %s\n", strerror(errno));
    return;
  }
  if (ioctl(fd, ADD_ENTROPY, &pool) < 0 && write(fd, bytes, len) != (ssize_t)len)
    buf_printf(err, "/dev/urandom: %s\n", strerror(errno));
  ioctl(fd, RESEED); /* kernels before 4.17 lack it: they reseed on their own schedule */
  close(fd);
}

/* Request T: what a script would do with date, hostname and a write to /dev/urandom, without the
 * process (under emulation a new process costs more than everything else of a restore). */
int set_identity(long seconds, const char *fields, struct buf *err) {
  long nanoseconds;
  int flags;
  char hostname64[256], entropy64[2048], machine_id[64] = "-";
  int count = sscanf(fields, "%ld %d %255s %2047s %63s", &nanoseconds, &flags, hostname64, entropy64,
                     machine_id);
  if (count < 4 || nanoseconds < 0 || nanoseconds >= 1000000000L) {
    buf_printf(err, "vmkit backdoor: malformed identity request\n");
    return 1;
  }
  struct timespec clock = {.tv_sec = seconds, .tv_nsec = nanoseconds};
  if (clock_settime(CLOCK_REALTIME, &clock) < 0) buf_printf(err, "clock_settime: %s\n", strerror(errno));
  if (strcmp(hostname64, "-")) {
    size_t len;
    char *name = base64_decode(hostname64, &len);
    if (!name || !len || memchr(name, 0, len)) buf_printf(err, "hostname: not a name\n");
    else if (sethostname(name, len) < 0) buf_printf(err, "sethostname: %s\n", strerror(errno));
    else if (flags & 1) write_hostname_files(name, err);
    free(name);
  }
  if (strcmp(entropy64, "-")) {
    size_t len;
    char *bytes = base64_decode(entropy64, &len);
    if (!bytes) buf_printf(err, "entropy: not base64\n");
    else add_entropy(bytes, len, err);
    free(bytes);
  }
  if (strcmp(machine_id, "-")) {
    if (strlen(machine_id) != 32 || strspn(machine_id, "0123456789abcdef") != 32)
      buf_printf(err, "machine id: not 32 hex digits\n");
    else
      set_machine_id(machine_id, err);
  }
  return err->len ? 1 : 0;
}

