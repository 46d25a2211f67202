/*
 * vmkit-pty: runs a command (default: sh -i) on a new pseudo-terminal in the guest and relays
 * bytes between the terminal and this program's stdin/stdout, which are pipes from vmkit's
 * backdoor. Inside the stdin stream, ESC ] 7 7 7 ; W ; <rows> ; <cols> BEL sets the terminal's
 * window size (vmkit sends it when the host terminal's size changes); every other byte goes to
 * the terminal as typed. Exits with the command's status. Built static by vmkit on the host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static const char PREFIX[] = "\033]777;W;";

static int write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t n = write(fd, data, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

/* Splits the stdin stream into typed bytes and window-size sequences. */
static char pending[64];
static size_t held = 0;

static void resize(int master, const char *body) {
  struct winsize size = {0};
  unsigned rows = 0, cols = 0;
  if (sscanf(body, "%u;%u", &rows, &cols) == 2) {
    size.ws_row = (unsigned short)rows;
    size.ws_col = (unsigned short)cols;
    ioctl(master, TIOCSWINSZ, &size);
  }
}

static void feed(int master, const char *data, size_t length) {
  for (size_t i = 0; i < length; i++) {
    char c = data[i];
    if (held == 0 && c != PREFIX[0]) {
      size_t run = i;
      while (run < length && data[run] != PREFIX[0]) run++;
      write_all(master, data + i, run - i);
      i = run - 1;
      continue;
    }
    pending[held++] = c;
    size_t prefix = sizeof(PREFIX) - 1;
    if (held <= prefix) {
      if (pending[held - 1] != PREFIX[held - 1]) {
        write_all(master, pending, held);
        held = 0;
      }
    } else if (c == '\a') {
      pending[held - 1] = '\0';
      resize(master, pending + prefix);
      held = 0;
    } else if (!((c >= '0' && c <= '9') || c == ';') || held == sizeof(pending)) {
      write_all(master, pending, held);
      held = 0;
    }
  }
}

int main(int argc, char **argv) {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
    perror("vmkit-pty: no pseudo-terminal");
    return 126;
  }
  const char *name = ptsname(master);
  pid_t child = fork();
  if (child < 0) {
    perror("vmkit-pty: fork");
    return 126;
  }
  if (child == 0) {
    setsid();
    int slave = open(name, O_RDWR);
    if (slave < 0) _exit(126);
    ioctl(slave, TIOCSCTTY, 0);
    dup2(slave, 0);
    dup2(slave, 1);
    dup2(slave, 2);
    if (slave > 2) close(slave);
    close(master);
    /* The backdoor starts commands in the background, where SIGINT and SIGQUIT are ignored. */
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    if (!getenv("TERM")) setenv("TERM", "xterm-256color", 1);
    if (argc > 1) execvp(argv[1], argv + 1);
    else execl("/bin/sh", "sh", "-i", (char *)NULL);
    perror("vmkit-pty: exec");
    _exit(127);
  }
  struct pollfd fds[2] = {{.fd = 0, .events = POLLIN}, {.fd = master, .events = POLLIN}};
  char buffer[16384];
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buffer, sizeof(buffer));
      if (n <= 0) break; /* EIO: the command and everything on its terminal ended */
      if (write_all(1, buffer, (size_t)n) < 0) break;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(0, buffer, sizeof(buffer));
      if (n <= 0) {
        fds[0].fd = -1; /* stdin ended: keep relaying output until the command exits */
        char eof = 4;
        write_all(master, &eof, 1);
      } else {
        feed(master, buffer, (size_t)n);
      }
    }
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}
