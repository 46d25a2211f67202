/* vmkit guest agent: runs the host's commands, driven over the virtio serial port vmkit.shell.
 *
 * The port, unlike a virtio console (hvc), has no tty line discipline, and QEMU throttles it
 * instead of dropping bytes when the host is slow to read.
 *
 * Requests from the host, each a line on the command channel:
 *   X <id> <timeout-seconds> <length>   followed by <length> bytes of script, run with sh
 *   Y <id> <timeout-seconds> <script>   the same for a one-line script sent on the line itself
 *   U <id> <size> <base64 path>         receive <size> bytes on the transfer port into path
 *   D <id> <base64 path>                send the file at path on the transfer port
 *   P <id> <timeout-seconds> <length>   followed by a script: start it and return at once
 *                                       (timeout 0: none); its output streams as it comes
 *   I <id> <process> <length>           followed by bytes for the stdin of process <process>
 *                                       (the id of the P request that started it)
 *   C <id> <process>                    end its stdin once it has read all that was sent
 *   K <id> <process> <signal>           send a signal to its whole session
 *   T <id> <seconds> <nanoseconds> <flags> <base64 hostname|-> <base64 entropy|->
 *                                       a restored guest's identity, set without a process:
 *                                       the wall clock, the hostname (flags & 1: also in
 *                                       /etc/hostname and on 127.0.1.1 in /etc/hosts), and
 *                                       randomness credited to the kernel's pool
 * Every request is answered on the command channel by:
 *   <<<VMKIT:R <id> <status> <timed-out 0|1>>>>
 *   <base64 stdout>
 *   <base64 stderr>
 *   <<<VMKIT:E <id>>>>
 * A started process (P) streams, while it runs and outside any reply:
 *   <<<VMKIT:O <id> <1 stdout|2 stderr> <base64 bytes>>>>
 * and once it has exited and all its output went out:
 *   <<<VMKIT:Z <id> <status> <timed-out 0|1>>>>
 * Uploads first get <<<VMKIT:GO <id>>>> (the host may send now) once the target can be written;
 * downloads get <<<VMKIT:SEND <id> <size>>>> before the bytes go out on the transfer port.
 *
 * An agent answers a request it does not know with status 2 and "unknown request '<name>'" on
 * stderr: the host falls back to the shell for what a newer request would do.
 *
 * One process, one poll() loop: each command is one posix_spawn of `sh -c` in a session of its
 * own (a timeout kills the session), with its output on pipes. A command is done when its shell
 * exits, not at end-of-file: what is in the pipes then is its output, and the pipes stay open and
 * drained afterwards, so a background process that holds stdout neither hangs the call nor dies
 * of a broken pipe. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define BANNER "\nSpawning backdoor root shell...\n"
#define MAX_JOBS 512
#define MAX_LEFTOVERS 512
/* Longer scripts go through a file: one argument of execve is limited to 128 KiB. */
#define MAX_INLINE_SCRIPT 100000
#define OUTPUT_CHUNK 49152

extern char **environ;

enum kind { RUN, PROCESS, TRANSFER };

struct job {
  int used;
  enum kind kind;
  long id;
  pid_t pid;
  int out, err, in; /* pipe ends, -1 once closed */
  struct buf stdout_bytes, stderr_bytes, stdin_bytes;
  int stdin_ends;
  long long deadline; /* ms on the monotonic clock, 0: none */
  int timed_out;
  char script_file[64];
};

static struct job jobs[MAX_JOBS];
static int leftovers[MAX_LEFTOVERS]; /* output pipes of finished jobs, drained until end-of-file */
static int leftover_count;
static int channel = -1, transfer = -1;
static char channel_path[64];
static long long reopen_at;
/* The pause before reopening a port that read as end-of-file: short right after a host left (the
 * next one often comes at once, as after a wake), doubling up to 200 ms while none comes. */
static int reopen_pause_ms = 5;
static struct buf requests;

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Writes to the host; while no host is there, what would go out is dropped. */
static void send_bytes(const void *data, size_t len) {
  const char *p = data;
  while (channel >= 0 && len) {
    ssize_t n = write(channel, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    len -= (size_t)n;
  }
}

static void send_reply(long id, int status, int timed_out, const struct buf *out, const struct buf *err) {
  struct buf reply = {0};
  buf_printf(&reply, "<<<VMKIT:R %ld %d %d>>>\n", id, status, timed_out);
  base64_encode(&reply, out ? out->data : NULL, out ? out->len : 0);
  buf_add(&reply, "\n", 1);
  base64_encode(&reply, err ? err->data : NULL, err ? err->len : 0);
  buf_printf(&reply, "\n<<<VMKIT:E %ld>>>\n", id);
  send_bytes(reply.data, reply.len);
  buf_free(&reply);
}

static void send_error(long id, int status, const char *format, long value) {
  struct buf err = {0};
  buf_add(&err, "vmkit backdoor: ", 16);
  buf_printf(&err, format, value);
  buf_add(&err, "\n", 1);
  send_reply(id, status, 0, NULL, &err);
  buf_free(&err);
}

static void send_output(long id, int stream, const char *data, size_t len) {
  for (size_t at = 0; at < len; at += OUTPUT_CHUNK) {
    size_t n = len - at < OUTPUT_CHUNK ? len - at : OUTPUT_CHUNK;
    struct buf line = {0};
    buf_printf(&line, "<<<VMKIT:O %ld %d ", id, stream);
    base64_encode(&line, data + at, n);
    buf_add(&line, ">>>\n", 4);
    send_bytes(line.data, line.len);
    buf_free(&line);
  }
}

/* Sends the complete lines a transfer child wrote (protocol lines for the channel). */
static void relay_lines(struct job *job) {
  char *end = memrchr(job->stdout_bytes.data, '\n', job->stdout_bytes.len);
  if (!end) return;
  size_t len = (size_t)(end - job->stdout_bytes.data) + 1;
  send_bytes(job->stdout_bytes.data, len);
  buf_drop(&job->stdout_bytes, len);
}

static void take_output(struct job *job, int stream, const char *data, size_t len) {
  if (job->kind == PROCESS) {
    send_output(job->id, stream, data, len);
    return;
  }
  buf_add(stream == 1 ? &job->stdout_bytes : &job->stderr_bytes, data, len);
  if (job->kind == TRANSFER && stream == 1) relay_lines(job);
}

/* Reads what a pipe holds; `exactly_now`: only the bytes already there (the writer may go on). */
static int read_pipe(struct job *job, int stream, int fd, int exactly_now) {
  static char chunk[65536];
  int left = (int)sizeof chunk;
  if (exactly_now && (ioctl(fd, FIONREAD, &left) < 0 || left == 0)) return 1;
  while (left > 0) {
    ssize_t n = read(fd, chunk, (size_t)left < sizeof chunk ? (size_t)left : sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 1;
    if (n <= 0) return 0; /* end of file */
    if (job) take_output(job, stream, chunk, (size_t)n);
    if (!exactly_now) return 1;
    left -= (int)n;
  }
  return 1;
}

static void keep_draining(int fd) {
  if (fd < 0) return;
  if (leftover_count == MAX_LEFTOVERS) {
    close(leftovers[0]);
    memmove(leftovers, leftovers + 1, sizeof leftovers[0] * --leftover_count);
  }
  leftovers[leftover_count++] = fd;
}

static void finish(struct job *job, int wait_status) {
  int status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
  int timed_out = job->timed_out && status >= 128;
  if (job->out >= 0) read_pipe(job, 1, job->out, 1);
  if (job->err >= 0) read_pipe(job, 2, job->err, 1);
  keep_draining(job->out);
  keep_draining(job->err);
  if (job->in >= 0) close(job->in);
  if (job->kind == PROCESS) {
    char line[96];
    int len = snprintf(line, sizeof line, "<<<VMKIT:Z %ld %d %d>>>\n", job->id, status, timed_out);
    send_bytes(line, (size_t)len);
  } else {
    if (job->kind == TRANSFER) relay_lines(job);
    send_reply(job->id, status, timed_out, job->kind == RUN ? &job->stdout_bytes : NULL, &job->stderr_bytes);
  }
  if (job->script_file[0]) unlink(job->script_file);
  buf_free(&job->stdout_bytes);
  buf_free(&job->stderr_bytes);
  buf_free(&job->stdin_bytes);
  memset(job, 0, sizeof *job);
}

static struct job *new_job(enum kind kind, long id, int timeout_seconds) {
  for (int i = 0; i < MAX_JOBS; i++) {
    if (jobs[i].used) continue;
    struct job *job = &jobs[i];
    memset(job, 0, sizeof *job);
    job->used = 1;
    job->kind = kind;
    job->id = id;
    job->out = job->err = job->in = -1;
    if (timeout_seconds > 0) job->deadline = now_ms() + timeout_seconds * 1000LL;
    return job;
  }
  send_error(id, 1, "too many processes (%ld) at once", MAX_JOBS);
  return NULL;
}

static struct job *process_job(long id) {
  for (int i = 0; i < MAX_JOBS; i++)
    if (jobs[i].used && jobs[i].kind == PROCESS && jobs[i].id == id) return &jobs[i];
  return NULL;
}

/* Output pipes of a new job; the child's ends go to `child[0]` (stdout) and `child[1]`. */
static int output_pipes(struct job *job, int child[2]) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) < 0) return -1;
  if (pipe2(err, O_CLOEXEC) < 0) {
    close(out[0]);
    close(out[1]);
    return -1;
  }
  job->out = out[0];
  job->err = err[0];
  fcntl(job->out, F_SETFL, O_NONBLOCK);
  fcntl(job->err, F_SETFL, O_NONBLOCK);
  child[0] = out[1];
  child[1] = err[1];
  return 0;
}

/* Starts `sh -c script` in a session of its own; stdin from a pipe (`with_stdin`) or /dev/null. */
static void start_script(struct job *job, const char *script, size_t len, int with_stdin) {
  int child[2], in[2] = {-1, -1};
  char *text = NULL;
  char *argv[] = {"sh", "-c", NULL, NULL};
  if (len > MAX_INLINE_SCRIPT || memchr(script, 0, len)) {
    snprintf(job->script_file, sizeof job->script_file, "/run/vmkit/script.%ld", job->id);
    int fd = open(job->script_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, script, len) != (ssize_t)len) {
      if (fd >= 0) close(fd);
      job->used = 0;
      send_error(job->id, 1, "cannot save the script of request %ld in /run/vmkit", job->id);
      return;
    }
    close(fd);
    argv[1] = job->script_file;
  } else {
    text = strndup(script, len);
    argv[2] = text;
  }
  if (output_pipes(job, child) < 0 || (with_stdin && pipe2(in, O_CLOEXEC) < 0)) {
    job->used = 0;
    send_error(job->id, 1, "no pipes for request %ld", job->id);
    free(text);
    return;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (with_stdin) posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  else posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, child[0], 1);
  posix_spawn_file_actions_adddup2(&actions, child[1], 2);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  int failed = posix_spawn(&job->pid, "/bin/sh", &actions, &attributes, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  free(text);
  close(child[0]);
  close(child[1]);
  if (with_stdin) {
    close(in[0]);
    job->in = in[1];
    fcntl(job->in, F_SETFL, O_NONBLOCK);
  }
  if (failed) {
    struct buf err = {0};
    buf_printf(&err, "vmkit backdoor: cannot start /bin/sh: %s\n", strerror(failed));
    send_reply(job->id, 127, 0, NULL, &err);
    buf_free(&err);
    close(job->out);
    close(job->err);
    if (job->in >= 0) close(job->in);
    job->used = 0;
    return;
  }
  if (job->kind == PROCESS) send_reply(job->id, 0, 0, NULL, NULL);
}

static void start_transfer(long id, int upload, long size, const char *path) {
  struct job *job = new_job(TRANSFER, id, 0);
  int child[2];
  if (!job) return;
  if (output_pipes(job, child) < 0) {
    job->used = 0;
    send_error(id, 1, "no pipes for request %ld", id);
    return;
  }
  job->pid = fork();
  if (job->pid == 0) {
    /* The command channel stays the agent's alone: a child stuck on a vanished host's transfer
     * must not keep the port from reopening for the next one. */
    if (channel >= 0) close(channel);
    dup2(child[0], 1);
    dup2(child[1], 2);
    exit(upload ? receive_file(id, size, path, transfer) : send_file(id, path, transfer));
  }
  close(child[0]);
  close(child[1]);
  if (job->pid < 0) {
    close(job->out);
    close(job->err);
    job->used = 0;
    send_error(id, 1, "cannot fork for request %ld", id);
  }
}

static int signal_number(const char *name) {
  static const char *const NAMES[] = {"",     "HUP",  "INT",  "QUIT", "ILL",    "TRAP", "ABRT", "BUS",
                                      "FPE",  "KILL", "USR1", "SEGV", "USR2",   "PIPE", "ALRM", "TERM",
                                      "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
                                      "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO",  "PWR",  "SYS"};
  if (*name >= '0' && *name <= '9') {
    int n = atoi(name);
    return n < 65 ? n : -1;
  }
  for (int i = 1; i < (int)(sizeof NAMES / sizeof NAMES[0]); i++)
    if (!strcmp(name, NAMES[i])) return i;
  return -1;
}

static void signal_process(long id, long process, const char *name) {
  struct job *job = process_job(process);
  int number = signal_number(name);
  if (!job) return send_error(id, 1, "process %ld has exited", process);
  if (number < 0) {
    struct buf err = {0};
    buf_printf(&err, "vmkit backdoor: kill: unknown signal %s\n", name);
    send_reply(id, 1, 0, NULL, &err);
    return buf_free(&err);
  }
  if (kill(-job->pid, number) == 0 || kill(job->pid, number) == 0) return send_reply(id, 0, 0, NULL, NULL);
  send_error(id, 1, "kill failed: errno %ld", errno);
}

/* Handles one request; `payload` is the bytes that followed its line (X, P, I). */
static void handle(const char *name, long id, long arg1, const char *arg2, const char *payload, size_t len) {
  char kind = name[1] ? '?' : name[0];
  struct job *job;
  switch (kind) {
  case 'X':
  case 'Y':
    if ((job = new_job(RUN, id, arg1 > 0 ? (int)arg1 : 1)))
      start_script(job, kind == 'X' ? payload : arg2, kind == 'X' ? len : strlen(arg2), 0);
    return;
  case 'P':
    if ((job = new_job(PROCESS, id, (int)arg1))) start_script(job, payload, len, 1);
    return;
  case 'I':
    if (!(job = process_job(arg1))) return send_error(id, 1, "process %ld has exited", arg1);
    if (job->in >= 0 && !job->stdin_ends) buf_add(&job->stdin_bytes, payload, len);
    return send_reply(id, 0, 0, NULL, NULL);
  case 'C':
    if ((job = process_job(arg1))) job->stdin_ends = 1;
    return send_reply(id, 0, 0, NULL, NULL);
  case 'K':
    return signal_process(id, arg1, arg2);
  case 'U':
    return start_transfer(id, 1, arg1, arg2);
  case 'D':
    return start_transfer(id, 0, 0, arg2);
  case 'T': {
    struct buf err = {0};
    int status = set_identity(arg1, arg2, &err);
    send_reply(id, status, 0, NULL, &err);
    return buf_free(&err);
  }
  default: {
    struct buf err = {0};
    buf_printf(&err, "vmkit backdoor: unknown request '%s'\n", name);
    send_reply(id, 2, 0, NULL, &err);
    return buf_free(&err);
  }
  }
}

/* Takes whole requests off the front of `requests`. */
static void serve_requests(void) {
  for (;;) {
    char *end = memchr(requests.data, '\n', requests.len);
    if (!end) return;
    size_t line_len = (size_t)(end - requests.data);
    char line[8192 + 64];
    if (line_len >= sizeof line) {
      buf_drop(&requests, line_len + 1);
      continue;
    }
    memcpy(line, requests.data, line_len);
    line[line_len] = 0;
    char *fields[4] = {NULL};
    char *rest = line;
    for (int i = 0; i < 4 && rest; i++) {
      while (*rest == ' ') rest++;
      fields[i] = rest;
      char *space = i < 3 ? strchr(rest, ' ') : NULL;
      if (space) *space = 0;
      rest = space ? space + 1 : NULL;
    }
    if (!fields[0] || !*fields[0]) {
      buf_drop(&requests, line_len + 1);
      continue;
    }
    char kind = fields[0][1] ? '?' : fields[0][0];
    long id = fields[1] ? atol(fields[1]) : 0;
    long arg1 = fields[2] ? atol(fields[2]) : 0;
    const char *arg2 = fields[3] ? fields[3] : "";
    /* D's path is its first argument. */
    if (kind == 'D') arg2 = fields[2] ? fields[2] : "";
    size_t payload = 0;
    if (kind == 'X' || kind == 'P' || kind == 'I') {
      payload = (size_t)atol(arg2);
      if (requests.len < line_len + 1 + payload) return; /* the rest is still on its way */
    }
    char *bytes = NULL;
    if (payload) {
      bytes = malloc(payload);
      memcpy(bytes, requests.data + line_len + 1, payload);
    }
    char *name = strdup(fields[0]), *argument = strdup(arg2);
    buf_drop(&requests, line_len + 1 + payload);
    handle(name, id, arg1, argument, bytes ? bytes : "", payload);
    free(name);
    free(argument);
    free(bytes);
  }
}

static int port_named(const char *name, char *path, size_t size) {
  DIR *ports = opendir("/sys/class/virtio-ports");
  struct dirent *entry;
  int found = 0;
  while (ports && !found && (entry = readdir(ports))) {
    char file[512], text[128] = "";
    snprintf(file, sizeof file, "/sys/class/virtio-ports/%s/name", entry->d_name);
    FILE *f = fopen(file, "re");
    if (!f) continue;
    if (fgets(text, sizeof text, f)) text[strcspn(text, "\n")] = 0;
    fclose(f);
    if (!strcmp(text, name)) found = snprintf(path, size, "/dev/%s", entry->d_name) > 0;
  }
  if (ports) closedir(ports);
  return found;
}

/* The port opens for one holder at a time; an earlier agent's leftovers may still hold it. */
static void try_open_channel(void) {
  channel = open(channel_path, O_RDWR | O_CLOEXEC);
  if (channel < 0) {
    reopen_at = now_ms() + 1000;
    return;
  }
  requests.len = 0;
  send_bytes(BANNER, sizeof BANNER - 1);
}

static void close_channel(void) {
  close(channel);
  channel = -1;
  /* A port with no host reads as end-of-file at once: try again after a short pause. */
  reopen_at = now_ms() + reopen_pause_ms;
  reopen_pause_ms = reopen_pause_ms * 2 > 200 ? 200 : reopen_pause_ms * 2;
}

static void feed_stdin(struct job *job) {
  while (job->stdin_bytes.len) {
    ssize_t n = write(job->in, job->stdin_bytes.data, job->stdin_bytes.len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0) { /* it closed its stdin: the rest has no reader */
      job->stdin_bytes.len = 0;
      break;
    }
    buf_drop(&job->stdin_bytes, (size_t)n);
  }
  if (job->stdin_ends) {
    close(job->in);
    job->in = -1;
  }
}

static void reap(int signals) {
  struct signalfd_siginfo info;
  while (read(signals, &info, sizeof info) == sizeof info) {
  }
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_JOBS; i++)
      if (jobs[i].used && jobs[i].pid == pid) finish(&jobs[i], status);
  }
}

static void enforce_deadlines(long long now) {
  for (int i = 0; i < MAX_JOBS; i++) {
    struct job *job = &jobs[i];
    if (!job->used || !job->deadline || job->deadline > now || job->timed_out) continue;
    job->timed_out = 1;
    kill(-job->pid, SIGKILL);
    kill(job->pid, SIGKILL);
  }
}

int main(void) {
  setenv("PATH", "/sbin:/bin:/usr/sbin:/usr/bin", 1);
  if (chdir("/") < 0) return 1;
  mkdir("/run/vmkit", 0755);
  signal(SIGPIPE, SIG_IGN);
  sigset_t child_exits;
  sigemptyset(&child_exits);
  sigaddset(&child_exits, SIGCHLD);
  sigprocmask(SIG_BLOCK, &child_exits, NULL);
  int signals = signalfd(-1, &child_exits, SFD_NONBLOCK | SFD_CLOEXEC);
  if (!port_named("vmkit.shell", channel_path, sizeof channel_path)) {
    fputs("vmkit backdoor: no vmkit.shell port\n", stderr);
    sleep(5);
    return 1;
  }
  char transfer_path[64];
  if (port_named("vmkit.transfer", transfer_path, sizeof transfer_path))
    transfer = open(transfer_path, O_RDWR | O_CLOEXEC);
  try_open_channel();

  static struct pollfd fds[2 + MAX_JOBS * 3 + MAX_LEFTOVERS];
  static struct job *owner[sizeof fds / sizeof fds[0]];
  static int stream_of[sizeof fds / sizeof fds[0]];
  for (;;) {
    long long now = now_ms();
    if (channel < 0 && now >= reopen_at) try_open_channel();
    enforce_deadlines(now);
    long long wake = channel < 0 ? reopen_at : 0;
    int n = 0;
    fds[n++] = (struct pollfd){.fd = signals, .events = POLLIN};
    fds[n++] = (struct pollfd){.fd = channel, .events = POLLIN};
    for (int i = 0; i < MAX_JOBS; i++) {
      struct job *job = &jobs[i];
      if (!job->used) continue;
      if (job->deadline && !job->timed_out && (!wake || job->deadline < wake)) wake = job->deadline;
      int pipe_ends[3] = {job->out, job->err, job->in};
      for (int s = 0; s < 3; s++) {
        if (pipe_ends[s] < 0 || (s == 2 && !job->stdin_bytes.len && !job->stdin_ends)) continue;
        owner[n] = job;
        stream_of[n] = s + 1;
        fds[n++] = (struct pollfd){.fd = pipe_ends[s], .events = s == 2 ? POLLOUT : POLLIN};
      }
    }
    int first_leftover = n;
    for (int i = 0; i < leftover_count; i++) fds[n++] = (struct pollfd){.fd = leftovers[i], .events = POLLIN};
    int timeout = wake ? (int)(wake > now ? wake - now : 0) : -1;
    if (poll(fds, (nfds_t)n, timeout) < 0) continue;

    for (int i = 2; i < first_leftover; i++) {
      struct job *job = owner[i];
      if (!fds[i].revents || !job->used) continue;
      if (stream_of[i] == 3) {
        if (job->in >= 0) feed_stdin(job);
        continue;
      }
      int *fd = stream_of[i] == 1 ? &job->out : &job->err;
      if (*fd == fds[i].fd && !read_pipe(job, stream_of[i], *fd, 0)) {
        close(*fd);
        *fd = -1;
      }
    }
    for (int i = leftover_count - 1; i >= 0; i--) {
      if (!fds[first_leftover + i].revents || read_pipe(NULL, 0, leftovers[i], 0)) continue;
      close(leftovers[i]);
      memmove(leftovers + i, leftovers + i + 1, sizeof leftovers[0] * (size_t)(--leftover_count - i));
    }
    if (fds[0].revents) reap(signals);
    if (channel >= 0 && fds[1].revents) {
      char chunk[65536];
      ssize_t got = read(channel, chunk, sizeof chunk);
      if (got > 0) {
        reopen_pause_ms = 5;
        buf_add(&requests, chunk, (size_t)got);
        serve_requests();
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        close_channel();
      }
    }
  }
}
