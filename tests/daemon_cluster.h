/*
 * daemon_cluster.h - the daemon tests' C side (daemon_cluster.c): a cluster of real cohortd
 * processes in a temporary directory, and cohortctl and the control socket driven against it.
 */
#ifndef COHORT_TESTS_DAEMON_CLUSTER_H
#define COHORT_TESTS_DAEMON_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DC_MAX_NODES 5u

struct dc_cluster;

struct dc_view {
	uint32_t epoch, members;
	bool quorum;
};

/* A temporary directory with @example's paths moved in, a secret, one config per node. */
int dc_new(const char *bin, const char *example, uint32_t nodes, struct dc_cluster **cp);
/* Kill what still runs, remove the directory and the shm cluster. */
void dc_delete(struct dc_cluster **cp);
const char *dc_dir(const struct dc_cluster *c);
void dc_conf_path(const struct dc_cluster *c, uint32_t node, char *out, size_t len);
void dc_sock_path(const struct dc_cluster *c, uint32_t node, char *out, size_t len);

/* cohortd -c nodeN.conf --node N, stderr into nodeN.log. */
int dc_start(struct dc_cluster *c, uint32_t node);
/* The daemon's pid, or -1 when it does not run. */
int dc_pid(const struct dc_cluster *c, uint32_t node);
/* Send @sig; SIGKILL also reaps it. */
int dc_signal(struct dc_cluster *c, uint32_t node, int sig);
/* Reap the daemon within @timeout_ms: 0 and its wait status, or -ETIMEDOUT. */
int dc_wait_exit(struct dc_cluster *c, uint32_t node, int timeout_ms, int *status);

/* Run `PREFIX cohortctl -s SOCK ARGS` (PREFIX: e.g. setpriv, or NULL), its output into @out:
 * its exit status, or -errno. */
int dc_ctl(struct dc_cluster *c, uint32_t node, const char *args, char *out, size_t len,
	   const char *prefix);
/* `cohortctl --json status` of @node. */
int dc_status(struct dc_cluster *c, uint32_t node, struct dc_view *v);
/* Until every node in @ask reports @members members, quorum and one epoch (into @epoch). */
int dc_wait_view(struct dc_cluster *c, uint32_t ask, uint32_t members, int timeout_ms,
		 uint32_t *epoch);
/* Until nodeN.log holds @needle. */
int dc_log_wait(struct dc_cluster *c, uint32_t node, const char *needle, int timeout_ms);
/* Append @text to nodeN.conf. */
int dc_append_conf(struct dc_cluster *c, uint32_t node, const char *text);
/* Send @len raw bytes on the control socket; read the answer until the daemon closes. */
int dc_raw(struct dc_cluster *c, uint32_t node, const void *req, size_t len, char *resp,
	   size_t rlen);
/* The modes of the socket and its directory. */
int dc_modes(struct dc_cluster *c, uint32_t node, unsigned *dir_mode, unsigned *sock_mode);
/* As uid 65534 (root only: -EPERM otherwise), ask for status; with @open_modes the socket and
 * its directory are opened to everyone first (and closed again after), so the daemon's
 * SO_PEERCRED check is what answers. @resp: the answer, or "connect: <error>". */
int dc_foreign(struct dc_cluster *c, uint32_t node, bool open_modes, char *resp, size_t rlen);

#ifdef __cplusplus
}
#endif

#endif
