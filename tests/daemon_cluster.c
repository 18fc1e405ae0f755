/*
 * daemon_cluster.c - runs real cohortd processes for tests/daemon_test.cc: a temporary directory
 * with the example config (docs/examples/cohort-3node-shm.conf) moved into it, a secret, one
 * config file per node (the example plus its own [daemon] section: a control socket, and no
 * front end but on the last node, whose TCMU target core does not exist), and the daemons as
 * child processes whose stderr goes to a file per node. Every wait is bounded and polls: the
 * daemons' state is read through `cohortctl --json`, their logs from the files.
 *
 * Leaves out: the rdma provider (the VM rig runs that), front ends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "daemon_cluster.h"

struct dc_cluster {
	char bin[512];
	char dir[64], shm[64];
	uint32_t nodes;
	pid_t pid[DC_MAX_NODES];
};

/* dc_now_ms - the monotonic clock. */
static int64_t dc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* dc_nap - the poll interval of the bounded waits. */
static void dc_nap(void)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = 50 * 1000000L };

	nanosleep(&ts, NULL);
}

/* dc_read_file - a whole (small) file, NUL-terminated; NULL if it cannot be read. */
static char *dc_read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	if (!f)
		return NULL;
	buf = malloc(1 << 20);
	if (buf) {
		n = fread(buf, 1, (1 << 20) - 1, f);
		buf[n] = '\0';
	}
	fclose(f);
	return buf;
}

/* dc_replace - replace every @from in @s (in place; @cap bytes) by @to. */
static int dc_replace(char *s, size_t cap, const char *from, const char *to)
{
	size_t fl = strlen(from), tl = strlen(to);
	char *p = s;

	while ((p = strstr(p, from))) {
		if (strlen(s) - fl + tl + 1 > cap)
			return -ENOSPC;
		memmove(p + tl, p + fl, strlen(p + fl) + 1);
		memcpy(p, to, tl);
		p += tl;
	}
	return 0;
}

const char *dc_dir(const struct dc_cluster *c)
{
	return c->dir;
}

void dc_conf_path(const struct dc_cluster *c, uint32_t node, char *out, size_t len)
{
	snprintf(out, len, "%s/node%u.conf", c->dir, node);
}

void dc_sock_path(const struct dc_cluster *c, uint32_t node, char *out, size_t len)
{
	snprintf(out, len, "%s/ctl/node%u.sock", c->dir, node);
}

int dc_new(const char *bin, const char *example, uint32_t nodes, struct dc_cluster **cp)
{
	struct dc_cluster *c;
	char *text, path[256], repl[256];
	size_t cap = 1 << 20;
	uint32_t i;
	FILE *f;
	int fd;

	if (nodes > DC_MAX_NODES)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	snprintf(c->bin, sizeof(c->bin), "%s", bin);
	snprintf(c->dir, sizeof(c->dir), "/tmp/cohort-daemon-XXXXXX");
	if (!mkdtemp(c->dir)) {
		free(c);
		return -errno;
	}
	/* Traversable (not readable) by others: the foreign-user test reaches the socket. */
	chmod(c->dir, 0711);
	snprintf(c->shm, sizeof(c->shm), "/dev/shm/cohort-daemon-%d", (int)getpid());
	c->nodes = nodes;
	text = dc_read_file(example);
	if (!text)
		goto err;
	/* The secret: 32 bytes, mode 0600. */
	snprintf(path, sizeof(path), "%s/secret", c->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, "0123456789abcdef0123456789abcdef", 32) != 32) {
		if (fd >= 0)
			close(fd);
		goto err_free_text;
	}
	close(fd);
	if (dc_replace(text, cap, "/dev/shm/cohort-demo", c->shm) ||
	    dc_replace(text, cap, "/etc/cohort/secret", path) ||
	    (snprintf(repl, sizeof(repl), "%s/data", c->dir),
	     dc_replace(text, cap, "/var/lib/cohort", repl)))
		goto err_free_text;
	snprintf(path, sizeof(path), "%s/data", c->dir);
	if (mkdir(path, 0700))
		goto err_free_text;
	for (i = 0; i < nodes; i++) {
		dc_conf_path(c, i, path, sizeof(path));
		f = fopen(path, "we");
		if (!f)
			goto err_free_text;
		dc_sock_path(c, i, repl, sizeof(repl));
		fprintf(f, "%s\n[daemon]\ncontrol = %s\n", text, repl);
		/* Nodes 0 and 1 run without a front end; the last one with TCMU pointed at a
		 * target core that does not exist, so that its attach fails, and says so, on any
		 * machine (a real one would create backstores). */
		if (i < nodes - 1)
			fprintf(f, "frontend = none\n");
		else
			fprintf(f, "configfs = %s/no-configfs\n", c->dir);
		fclose(f);
	}
	free(text);
	for (i = 0; i < DC_MAX_NODES; i++)
		c->pid[i] = -1;
	*cp = c;
	return 0;

err_free_text:
	free(text);
err:
	snprintf(path, sizeof(path), "rm -rf '%s'", c->dir);
	if (system(path))
		fprintf(stderr, "dc_new: %s failed\n", path);
	free(c);
	return -EIO;
}

int dc_start(struct dc_cluster *c, uint32_t node)
{
	char conf[256], log[256], exe[600], id[8];
	pid_t pid;
	int fd;

	dc_conf_path(c, node, conf, sizeof(conf));
	snprintf(log, sizeof(log), "%s/node%u.log", c->dir, node);
	snprintf(exe, sizeof(exe), "%s/cohortd", c->bin);
	snprintf(id, sizeof(id), "%u", node);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
			_exit(127);
		/* The daemon must not outlive a test that crashes. */
		alarm(300);
		execl(exe, "cohortd", "-c", conf, "--node", id, (char *)NULL);
		_exit(127);
	}
	c->pid[node] = pid;
	return 0;
}

int dc_signal(struct dc_cluster *c, uint32_t node, int sig)
{
	if (c->pid[node] <= 0)
		return -ESRCH;
	if (kill(c->pid[node], sig))
		return -errno;
	if (sig == SIGKILL) {
		waitpid(c->pid[node], NULL, 0);
		c->pid[node] = -1;
	}
	return 0;
}

int dc_wait_exit(struct dc_cluster *c, uint32_t node, int timeout_ms, int *status)
{
	int64_t deadline = dc_now_ms() + timeout_ms;
	pid_t r;

	if (c->pid[node] <= 0)
		return -ESRCH;
	for (;;) {
		r = waitpid(c->pid[node], status, WNOHANG);
		if (r == c->pid[node]) {
			c->pid[node] = -1;
			return 0;
		}
		if (r < 0)
			return -errno;
		if (dc_now_ms() > deadline)
			return -ETIMEDOUT;
		dc_nap();
	}
}

int dc_ctl(struct dc_cluster *c, uint32_t node, const char *args, char *out, size_t len,
	   const char *prefix)
{
	char sock[256], cmd[1024];
	size_t n = 0, got;
	FILE *p;
	int st;

	dc_sock_path(c, node, sock, sizeof(sock));
	snprintf(cmd, sizeof(cmd), "%s '%s/cohortctl' -s '%s' %s 2>&1", prefix ? prefix : "",
		 c->bin, sock, args);
	p = popen(cmd, "r");
	if (!p)
		return -errno;
	/* cohortctl bounds its own wait (5 s, 60 s for stop). */
	while (n < len - 1 && (got = fread(out + n, 1, len - 1 - n, p)) > 0)
		n += got;
	out[n] = '\0';
	st = pclose(p);
	if (st < 0 || !WIFEXITED(st))
		return -ECHILD;
	return WEXITSTATUS(st);
}

int dc_status(struct dc_cluster *c, uint32_t node, struct dc_view *v)
{
	char *out = malloc(1 << 16);
	json_t *j;
	int ret;

	if (!out)
		return -ENOMEM;
	ret = dc_ctl(c, node, "--json status", out, 1 << 16, NULL);
	if (ret) {
		free(out);
		return ret > 0 ? -EAGAIN : ret;
	}
	j = json_loads(out, 0, NULL);
	free(out);
	if (!j)
		return -EPROTO;
	v->epoch = (uint32_t)json_integer_value(json_object_get(j, "epoch"));
	v->members = (uint32_t)json_integer_value(json_object_get(j, "members"));
	v->quorum = json_is_true(json_object_get(j, "quorum"));
	json_decref(j);
	return 0;
}

int dc_wait_view(struct dc_cluster *c, uint32_t ask, uint32_t members, int timeout_ms,
		 uint32_t *epoch)
{
	int64_t deadline = dc_now_ms() + timeout_ms;
	struct dc_view v;
	uint32_t i, e;
	bool agree;

	for (;;) {
		agree = true;
		e = 0;
		for (i = 0; i < c->nodes && agree; i++) {
			if (!(ask & (1u << i)))
				continue;
			if (dc_status(c, i, &v) || v.members != members || !v.quorum ||
			    (e && v.epoch != e))
				agree = false;
			e = v.epoch;
		}
		if (agree) {
			*epoch = e;
			return 0;
		}
		if (dc_now_ms() > deadline)
			return -ETIMEDOUT;
		dc_nap();
	}
}

int dc_log_wait(struct dc_cluster *c, uint32_t node, const char *needle, int timeout_ms)
{
	int64_t deadline = dc_now_ms() + timeout_ms;
	char path[256], *text;
	bool found;

	snprintf(path, sizeof(path), "%s/node%u.log", c->dir, node);
	for (;;) {
		text = dc_read_file(path);
		found = text && strstr(text, needle);
		free(text);
		if (found)
			return 0;
		if (dc_now_ms() > deadline)
			return -ETIMEDOUT;
		dc_nap();
	}
}

int dc_pid(const struct dc_cluster *c, uint32_t node)
{
	return node < DC_MAX_NODES ? (int)c->pid[node] : -1;
}

int dc_append_conf(struct dc_cluster *c, uint32_t node, const char *text)
{
	char path[256];
	FILE *f;

	dc_conf_path(c, node, path, sizeof(path));
	f = fopen(path, "ae");
	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) ? -errno : 0;
}

int dc_raw(struct dc_cluster *c, uint32_t node, const void *req, size_t len, char *resp,
	   size_t rlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	size_t n = 0;
	ssize_t got;
	int fd;

	dc_sock_path(c, node, sa.sun_path, sizeof(sa.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Bounded: the daemon answers within its own 2 s bound, or the test fails here. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	/* A daemon that refuses the peer answers without reading: the send may then fail
	 * (EPIPE) with the answer waiting to be read. */
	if (len && send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len && errno != EPIPE &&
	    errno != ECONNRESET) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	while (n < rlen - 1 && (got = read(fd, resp + n, rlen - 1 - n)) > 0)
		n += (size_t)got;
	resp[n] = '\0';
	close(fd);
	return 0;
}

int dc_modes(struct dc_cluster *c, uint32_t node, unsigned *dir_mode, unsigned *sock_mode)
{
	char path[256];
	struct stat st;

	dc_sock_path(c, node, path, sizeof(path));
	if (stat(path, &st) || !S_ISSOCK(st.st_mode))
		return -ENOENT;
	*sock_mode = st.st_mode & 07777;
	*strrchr(path, '/') = '\0';
	if (stat(path, &st))
		return -errno;
	*dir_mode = st.st_mode & 07777;
	return 0;
}

int dc_foreign(struct dc_cluster *c, uint32_t node, bool open_modes, char *resp, size_t rlen)
{
	char path[256];
	int pfd[2], st, ret = 0;
	ssize_t got;
	size_t n = 0;
	pid_t pid;

	if (geteuid() != 0)
		return -EPERM;
	dc_sock_path(c, node, path, sizeof(path));
	if (open_modes) {
		/* Let the file modes through, so that the daemon's own credential check is what
		 * refuses: the second guard, tested on its own. */
		if (chmod(path, 0777))
			return -errno;
		*strrchr(path, '/') = '\0';
		if (chmod(path, 0777))
			return -errno;
	}
	if (pipe(pfd))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		char out[1024];
		int r;

		close(pfd[0]);
		alarm(20);
		if (setgid(65534) || setuid(65534))
			_exit(3);
		r = dc_raw(c, node, "{\"cmd\":\"status\"}\n", 17, out, sizeof(out));
		if (r)
			snprintf(out, sizeof(out), "connect: %s", strerror(-r));
		if (write(pfd[1], out, strlen(out)) < 0)
			_exit(4);
		_exit(0);
	}
	close(pfd[1]);
	while (n < rlen - 1 && (got = read(pfd[0], resp + n, rlen - 1 - n)) > 0)
		n += (size_t)got;
	resp[n] = '\0';
	close(pfd[0]);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		ret = -ECHILD;
	if (open_modes) {
		chmod(path, 0700);
		dc_sock_path(c, node, path, sizeof(path));
		chmod(path, 0600);
	}
	return ret;
}

void dc_delete(struct dc_cluster **cp)
{
	struct dc_cluster *c = *cp;
	char cmd[400];
	uint32_t i;

	if (!c)
		return;
	for (i = 0; i < DC_MAX_NODES; i++) {
		if (c->pid[i] > 0)
			dc_signal(c, i, SIGKILL);
	}
	/* A routed config's groups have directories beside the cluster's ("<shm>-<group>"). */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s' '%s'-*", c->dir, c->shm, c->shm);
	if (system(cmd))
		fprintf(stderr, "dc_delete: %s failed\n", cmd);
	free(c);
	*cp = NULL;
}
