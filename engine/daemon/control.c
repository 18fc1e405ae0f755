/*
 * control.c - the control socket of cohortd, and the client side cohortctl uses. A UNIX stream
 * socket in a directory only its owner can enter (0700), itself 0600, and a peer credential check
 * (SO_PEERCRED: root or the daemon's own user) on every connection, so the file modes are not the
 * only guard. One request per connection: a JSON object on one line (at most DAEMON_CTL_MSG_MAX
 * bytes, newline included), answered by one JSON object on one line: {"ok": true, ...} or
 * {"ok": false, "error": "..."}. A malformed request gets such an error answer.
 *
 * One thread serves the connections one after the other. Every read and write is non-blocking
 * under poll() with a deadline (DAEMON_CTL_IO_MS), so a client that sends half a line or never
 * reads its answer costs at most that long; clients that queue meanwhile wait in the backlog,
 * and cohortctl's own deadline turns a long wait into "daemon busy". The thread is stopped through
 * a pipe it polls with the listening socket.
 *
 * Leaves out: several requests per connection, notifications, remote (TCP) control.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

struct daemon_ctl {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int lfd;
	int stop[2]; /* the thread polls stop[0]; close(stop[1]) ends it */
	daemon_ctl_fn fn;
	void *arg;
	pthread_t thread;
};

/* ctl_now_ms - a monotonic clock for the deadlines. */
static int64_t ctl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ctl_wait - poll @fd for @events until @deadline: 0 ready, -ETIMEDOUT, or -errno. */
static int ctl_wait(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int64_t left;
	int n;

	for (;;) {
		left = deadline - ctl_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/*
 * ctl_read_line - read one line of at most @cap - 1 bytes from non-blocking @fd into @buf
 * (NUL-terminated, newline dropped), by @deadline. Returns its length, -EMSGSIZE (longer),
 * -ECONNRESET (the peer closed before a newline), -ETIMEDOUT or -errno.
 */
static ssize_t ctl_read_line(int fd, char *buf, size_t cap, int64_t deadline)
{
	size_t n = 0;
	ssize_t got;
	char *nl;
	int ret;

	for (;;) {
		if (n == cap - 1)
			return -EMSGSIZE;
		got = read(fd, buf + n, cap - 1 - n);
		if (got > 0) {
			n += (size_t)got;
			buf[n] = '\0';
			nl = memchr(buf, '\n', n);
			if (nl) {
				*nl = '\0';
				return nl - buf;
			}
			continue;
		}
		if (got == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		ret = ctl_wait(fd, POLLIN, deadline);
		if (ret)
			return ret;
	}
}

/* ctl_write_all - write @len bytes to non-blocking @fd by @deadline: 0 or -errno. */
static int ctl_write_all(int fd, const char *buf, size_t len, int64_t deadline)
{
	ssize_t put;
	int ret;

	while (len) {
		put = send(fd, buf, len, MSG_NOSIGNAL);
		if (put > 0) {
			buf += put;
			len -= (size_t)put;
			continue;
		}
		if (put < 0 && errno == EINTR)
			continue;
		if (put < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		ret = ctl_wait(fd, POLLOUT, deadline);
		if (ret)
			return ret;
	}
	return 0;
}

/* ctl_error - an error answer. */
static json_t *ctl_error(const char *msg)
{
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

/* ctl_answer - what to send for request line @line. */
static json_t *ctl_answer(struct daemon_ctl *ctl, const char *line)
{
	char err[DAEMON_ERR_MAX], msg[DAEMON_ERR_MAX + 32];
	json_error_t jerr;
	json_t *req, *cmd, *resp;

	req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		snprintf(msg, sizeof(msg), "malformed request: %s (column %d)", jerr.text,
			 jerr.column);
		return ctl_error(msg);
	}
	cmd = json_object_get(req, "cmd");
	if (!json_is_object(req) || !json_is_string(cmd)) {
		json_decref(req);
		return ctl_error("malformed request: want an object with a string \"cmd\"");
	}
	err[0] = '\0';
	resp = ctl->fn(ctl->arg, json_string_value(cmd), req, err, sizeof(err));
	json_decref(req);
	if (!resp)
		return ctl_error(err[0] ? err : "request failed");
	return resp;
}

/* ctl_serve - one connection: credentials, one request, one answer, each bounded. */
static void ctl_serve(struct daemon_ctl *ctl, int fd)
{
	int64_t deadline = ctl_now_ms() + DAEMON_CTL_IO_MS;
	char *buf, *out = NULL;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	json_t *resp;
	ssize_t n;

	buf = malloc(DAEMON_CTL_MSG_MAX + 1);
	if (!buf)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) || len != sizeof(cred)) {
		resp = ctl_error("cannot read the peer's credentials");
	} else if (cred.uid != 0 && cred.uid != geteuid()) {
		daemon_log("control", "refused uid %u (pid %d): only root may use this socket",
			   (unsigned)cred.uid, (int)cred.pid);
		resp = ctl_error("permission denied: only root may use this socket");
	} else {
		n = ctl_read_line(fd, buf, DAEMON_CTL_MSG_MAX + 1, deadline);
		if (n == -EMSGSIZE)
			resp = ctl_error("malformed request: longer than 4096 bytes");
		else if (n == -ETIMEDOUT)
			resp = ctl_error("malformed request: no complete line within 2 s");
		else if (n < 0)
			resp = NULL; /* the peer is gone */
		else
			resp = ctl_answer(ctl, buf);
	}
	if (resp)
		out = json_dumps(resp, JSON_COMPACT);
	if (out) {
		size_t olen = strlen(out);

		/* The answer gets its own bound: a request (stop) may take longer than the read's. */
		deadline = ctl_now_ms() + DAEMON_CTL_IO_MS;
		/* The newline ends the answer for the client. */
		if (!ctl_write_all(fd, out, olen, deadline))
			ctl_write_all(fd, "\n", 1, deadline);
	}
	free(out);
	json_decref(resp);
	free(buf);
}

/* ctl_thread - accept and serve until the stop pipe closes. */
static void *ctl_thread(void *arg)
{
	struct daemon_ctl *ctl = arg;
	struct pollfd pfd[2] = { { .fd = ctl->lfd, .events = POLLIN },
				 { .fd = ctl->stop[0], .events = POLLIN } };
	int fd;

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			daemon_log("control", "poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		fd = accept4(ctl->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			continue; /* EAGAIN, or a peer that went away before accept */
		ctl_serve(ctl, fd);
		close(fd);
	}
	return NULL;
}

/* ctl_dir - make the socket's directory 0700, or refuse one that others can enter. */
static int ctl_dir(const char *path, char *err, size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct stat st;
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir) {
		snprintf(err, errlen, "%s: the control socket needs a directory of its own", path);
		return -EINVAL;
	}
	*slash = '\0';
	if (mkdir(dir, 0700) && errno != EEXIST) {
		int ret = -errno;

		snprintf(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
		return ret;
	}
	if (lstat(dir, &st)) {
		int ret = -errno;

		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return ret;
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
		snprintf(
		    err, errlen,
		    "%s: the control directory must be ours and mode 0700 (it is %04o, uid %u)",
		    dir, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
		return -EPERM;
	}
	return 0;
}

int daemon_ctl_open(const char *path, daemon_ctl_fn fn, void *arg, struct daemon_ctl **ctlp,
		    char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct daemon_ctl *ctl;
	int ret, probe;

	if (!path || !fn || !ctlp || strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: not a usable socket path (at most %zu bytes)",
			 path ? path : "(null)", sizeof(sa.sun_path) - 1);
		return -EINVAL;
	}
	ret = ctl_dir(path, err, errlen);
	if (ret)
		return ret;
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	strcpy(sa.sun_path, path);
	ctl->fn = fn;
	ctl->arg = arg;
	/* A socket file left by a daemon that died is replaced; one a live daemon answers on is
	 * not (two daemons for one node would be a configuration error worth stopping on). */
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		if (!connect(probe, (struct sockaddr *)&sa, sizeof(sa))) {
			close(probe);
			snprintf(err, errlen, "%s: another daemon answers there", path);
			ret = -EADDRINUSE;
			goto err_free;
		}
		close(probe);
	}
	unlink(path);
	ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ctl->lfd < 0) {
		ret = -errno;
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto err_free;
	}
	if (bind(ctl->lfd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0600) ||
	    listen(ctl->lfd, 16)) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto err_close_socket;
	}
	if (pipe2(ctl->stop, O_CLOEXEC)) {
		ret = -errno;
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto err_unlink;
	}
	ret = -pthread_create(&ctl->thread, NULL, ctl_thread, ctl);
	if (ret) {
		snprintf(err, errlen, "control thread: %s", strerror(-ret));
		goto err_close_pipe;
	}
	*ctlp = ctl;
	return 0;

err_close_pipe:
	close(ctl->stop[0]);
	close(ctl->stop[1]);
err_unlink:
	unlink(path);
err_close_socket:
	close(ctl->lfd);
err_free:
	free(ctl);
	return ret;
}

void daemon_ctl_close(struct daemon_ctl **ctlp)
{
	struct daemon_ctl *ctl;

	if (!ctlp || !*ctlp)
		return;
	ctl = *ctlp;
	close(ctl->stop[1]);
	pthread_join(ctl->thread, NULL);
	close(ctl->stop[0]);
	close(ctl->lfd);
	unlink(ctl->path);
	free(ctl);
	*ctlp = NULL;
}

int daemon_ctl_request(const char *path, json_t *req, int timeout_ms, json_t **resp, char *err,
		       size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t deadline = ctl_now_ms() + timeout_ms;
	char *out = NULL, *buf = NULL;
	json_error_t jerr;
	ssize_t n;
	int fd, ret;

	if (!path || strlen(path) >= sizeof(sa.sun_path) || !req || !resp) {
		snprintf(err, errlen, "%s: not a usable socket path", path ? path : "(null)");
		return -EINVAL;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return ret;
	}
	/* A blocking UNIX connect waits while the daemon's backlog is full, for at most the
	 * send timeout, then fails with EAGAIN: that bounds it. Then non-blocking for the rest. */
	{
		struct timeval tv = { .tv_sec = timeout_ms / 1000,
				      .tv_usec = (timeout_ms % 1000) * 1000 };

		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		if (ret == -ENOENT || ret == -ECONNREFUSED)
			snprintf(err, errlen, "no daemon at %s (is cohortd running?)", path);
		else if (ret == -EACCES || ret == -EPERM)
			snprintf(err, errlen, "%s: permission denied (cohortctl must run as root)",
				 path);
		else if (ret == -EAGAIN)
			snprintf(err, errlen, "%s: daemon busy (its queue is full)", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		goto out_close;
	}
	if (fcntl(fd, F_SETFL, O_NONBLOCK)) {
		ret = -errno;
		snprintf(err, errlen, "fcntl: %s", strerror(errno));
		goto out_close;
	}
	out = json_dumps(req, JSON_COMPACT);
	buf = malloc(1 << 20);
	if (!out || !buf) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out_close;
	}
	ret = ctl_write_all(fd, out, strlen(out), deadline);
	if (!ret)
		ret = ctl_write_all(fd, "\n", 1, deadline);
	if (ret == -EPIPE || ret == -ECONNRESET)
		ret = 0; /* the daemon answered early (an error) and closed: read its answer */
	if (ret)
		goto out_io;
	n = ctl_read_line(fd, buf, 1 << 20, deadline);
	if (n < 0) {
		ret = (int)n;
		goto out_io;
	}
	*resp = json_loads(buf, 0, &jerr);
	if (!*resp || !json_is_object(*resp)) {
		json_decref(*resp);
		*resp = NULL;
		ret = -EPROTO;
		snprintf(err, errlen, "%s: the answer is not a JSON object: %s", path, jerr.text);
	}
	goto out_close;

out_io:
	if (ret == -ETIMEDOUT)
		snprintf(err, errlen, "%s: daemon busy: no answer within %d ms", path, timeout_ms);
	else
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
out_close:
	free(buf);
	free(out);
	close(fd);
	return ret;
}
