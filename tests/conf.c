/*
 * conf.c - the conformance harness: forks node processes, opens each node's fabric on the
 * provider under test, connects a full mesh of control and data endpoints, and gives scenarios
 * barriers and messages built on SEND/RECV (so the control plane is itself under test).
 *
 * The parent never opens a fabric: it only forks, waits and reports, so that the children start
 * from a process with no fabric threads. Every child has an alarm as a backstop, and the parent's
 * wait is bounded by it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"

#define CTL_SLOTS 16u
#define CTL_SEND_SLOT (CONF_MAX_NODES * CTL_SLOTS)

const char *conf_provider(void)
{
	const char *p = getenv("COHORT_TEST_PROVIDER");

	return p && *p ? p : "shm";
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void conf_cluster_cleanup(const char *cluster)
{
	if (strcmp(conf_provider(), "shm") == 0)
		nftw(cluster, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* conf_cluster_new - a fresh cluster address for @n nodes: a new directory on shm, a fresh port
 * range on rdma (so that one test's leftovers never meet the next test). */
int conf_cluster_new(char *buf, size_t len, uint32_t n)
{
	static unsigned int port_step;
	const char *env;
	size_t off = 0;
	uint32_t i;

	if (strcmp(conf_provider(), "shm") == 0) {
		env = getenv("COHORT_TEST_SHM_BASE");
		snprintf(buf, len, "%s/cohort-conf-XXXXXX", env && *env ? env : "/dev/shm");
		return mkdtemp(buf) ? 0 : -errno;
	}
	env = getenv("COHORT_TEST_CLUSTER");
	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return 0;
	}
	{
		const char *ip = getenv("COHORT_RXE_IP");
		const char *base_env = getenv("COHORT_TEST_PORT_BASE");
		unsigned int base = base_env ? (unsigned int)atoi(base_env) : 17000;

		base += (unsigned int)(getpid() % 500) * 16 + (port_step++ % 16) * CONF_MAX_NODES;
		if (!ip)
			return -EINVAL;
		for (i = 0; i < n && off < len; i++)
			off += (size_t)snprintf(buf + off, len - off, "%s%s:%u", i ? "," : "", ip,
						base + i);
	}
	return 0;
}

static int ctl_post_recv(struct conf_node *cn, uint32_t peer, uint32_t slot)
{
	size_t off = (size_t)(peer * CTL_SLOTS + slot) * CONF_MSG_MAX;

	return coh_ep_post_recv(cn->ctl[peer], cn->ctl_mr, off, CONF_MSG_MAX,
				(uint64_t)peer << 32 | slot);
}

/* ctl_pump - take control completions; file received messages in their sender's inbox. */
static int ctl_pump(struct conf_node *cn, int timeout_ms)
{
	struct coh_wc wc[16];
	int n, i, ret;

	n = coh_cq_wait(cn->ctl_cq, wc, 16, timeout_ms);
	if (n < 0)
		return n;
	for (i = 0; i < n; i++) {
		uint32_t peer = (uint32_t)(wc[i].wr_id >> 32), slot = (uint32_t)wc[i].wr_id;
		uint32_t q;

		if (wc[i].opcode != COH_WC_RECV)
			continue;
		/* A flushed receive means the peer left; what it sent before is in the inbox. */
		if (wc[i].status == -ECONNRESET)
			continue;
		if (wc[i].status)
			return wc[i].status;
		if (cn->inbox_count[peer] == 64)
			return -ENOBUFS;
		q = (cn->inbox_head[peer] + cn->inbox_count[peer]) % 64;
		memcpy(cn->inbox[peer][q],
		       (uint8_t *)coh_mr_addr(cn->ctl_mr) +
			   (size_t)(peer * CTL_SLOTS + slot) * CONF_MSG_MAX,
		       wc[i].byte_len);
		cn->inbox_len[peer][q] = wc[i].byte_len;
		cn->inbox_count[peer]++;
		ret = ctl_post_recv(cn, peer, slot);
		if (ret)
			return ret;
	}
	return 0;
}

int conf_send(struct conf_node *cn, uint32_t peer, const void *msg, uint32_t len)
{
	size_t off = (size_t)CTL_SEND_SLOT * CONF_MSG_MAX;

	if (len > CONF_MSG_MAX || peer >= cn->n || !cn->ctl[peer])
		return -EINVAL;
	memcpy((uint8_t *)coh_mr_addr(cn->ctl_mr) + off, msg, len);
	return coh_ep_send_sync(cn->ctl[peer], cn->ctl_mr, off, len);
}

int conf_recv(struct conf_node *cn, uint32_t peer, void *msg, uint32_t *len, int timeout_ms)
{
	struct timespec ts;
	uint64_t now, deadline;
	int ret;

	if (peer >= cn->n)
		return -EINVAL;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	deadline =
	    (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + (uint64_t)timeout_ms;
	while (!cn->inbox_count[peer]) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
		/* Always pump once, so that a zero timeout still looks. */
		ret = ctl_pump(cn, now >= deadline ? 0 : (int)(deadline - now));
		if (ret && ret != -ETIMEDOUT && ret != -EAGAIN)
			return ret;
		if (!cn->inbox_count[peer] && !coh_ep_is_up(cn->ctl[peer])) {
			/* What the peer sent before it left may still be on its way in: take
			 * every completion there is before concluding it is gone. */
			int spins = 0;

			while (!cn->inbox_count[peer] && spins++ < 64 && ctl_pump(cn, 0) != -EAGAIN)
				;
			if (!cn->inbox_count[peer])
				return -ECONNRESET;
			break;
		}
		if (!cn->inbox_count[peer] && now >= deadline)
			return -ETIMEDOUT;
	}
	memcpy(msg, cn->inbox[peer][cn->inbox_head[peer]],
	       cn->inbox_len[peer][cn->inbox_head[peer]]);
	if (len)
		*len = cn->inbox_len[peer][cn->inbox_head[peer]];
	cn->inbox_head[peer] = (cn->inbox_head[peer] + 1) % 64;
	cn->inbox_count[peer]--;
	return 0;
}

/* conf_barrier - everyone reports to node 0, which releases everyone. */
int conf_barrier(struct conf_node *cn)
{
	uint8_t token = 0xb7, got;
	uint32_t i;
	int ret;

	if (cn->id == 0) {
		for (i = 1; i < cn->n; i++) {
			ret = conf_recv(cn, i, &got, NULL, CONF_TIMEOUT_MS);
			if (ret)
				return ret;
		}
		for (i = 1; i < cn->n; i++) {
			ret = conf_send(cn, i, &token, 1);
			if (ret)
				return ret;
		}
		return 0;
	}
	ret = conf_send(cn, 0, &token, 1);
	return ret ? ret : conf_recv(cn, 0, &got, NULL, CONF_TIMEOUT_MS);
}

/*
 * goodbye - the harness's last step. Everyone reports to node 0, node 0 releases everyone, and
 * everyone but node 0 then says bye; node 0 leaves only after each has said bye or left (a node
 * leaves only after its release, so its departure is as good as a bye). No node leaves right
 * after sending a message its peer may not have taken yet, which is when a transport may
 * legitimately flush it.
 */
static int goodbye(struct conf_node *cn)
{
	uint8_t token = 0xb7, got;
	uint32_t i;
	int ret;

	ret = conf_barrier(cn);
	if (ret)
		return ret;
	if (cn->id != 0)
		return conf_send(cn, 0, &token, 1);
	for (i = 1; i < cn->n; i++) {
		ret = conf_recv(cn, i, &got, NULL, CONF_TIMEOUT_MS);
		if (ret && ret != -ECONNRESET)
			return ret;
	}
	return 0;
}

int conf_exchange(struct conf_node *cn, struct coh_mr *mr, struct coh_mr_desc *descs)
{
	struct coh_mr_desc mine;
	uint32_t i, len;
	int ret;

	ret = coh_mr_export(mr, &mine);
	if (ret)
		return ret;
	descs[cn->id] = mine;
	for (i = 0; i < cn->n; i++) {
		if (i != cn->id && (ret = conf_send(cn, i, &mine, sizeof(mine))))
			return ret;
	}
	for (i = 0; i < cn->n; i++) {
		if (i == cn->id)
			continue;
		ret = conf_recv(cn, i, &descs[i], &len, CONF_TIMEOUT_MS);
		if (ret)
			return ret;
		if (len != sizeof(mine)) {
			fprintf(stderr, "node %u: exchange: %u-byte message from %u\n", cn->id, len,
				i);
			return -EPROTO;
		}
	}
	return 0;
}

int conf_wait1(struct conf_node *cn, struct coh_wc *wc)
{
	int n = coh_cq_wait(cn->data_cq, wc, 1, CONF_TIMEOUT_MS);

	return n == 1 ? 0 : n;
}

/* node_up - open the fabric and connect the mesh. Lower ids connect first to keep the
 * handshakes in one global order, so no pair waits on a third. */
static int node_up(struct conf_node *cn, const char *cluster)
{
	struct coh_fabric_attr fa = { .provider = cn->provider,
				      .cluster = cluster,
				      .node_id = cn->id,
				      .timeout_ms = CONF_TIMEOUT_MS };
	uint32_t i, s;
	int ret;

	ret = coh_fabric_open(&fa, &cn->fab);
	if (ret)
		return ret;
	ret = coh_cq_new(cn->fab, 4096, &cn->ctl_cq);
	if (!ret)
		ret = coh_cq_new(cn->fab, 8192, &cn->data_cq);
	if (!ret)
		ret = coh_mr_new(cn->fab, (size_t)(CTL_SEND_SLOT + 1) * CONF_MSG_MAX,
				 COH_ACCESS_LOCAL_WRITE, &cn->ctl_mr);
	if (ret)
		return ret;
	for (i = 0; i < cn->n; i++) {
		struct coh_ep_attr ca = { .peer = i,
					  .channel = 0,
					  .send_cq = cn->ctl_cq,
					  .recv_cq = cn->ctl_cq,
					  .max_send_wr = 16,
					  .max_recv_wr = CTL_SLOTS,
					  .max_msg_size = CONF_MSG_MAX };
		struct coh_ep_attr da = { .peer = i,
					  .channel = 1,
					  .send_cq = cn->data_cq,
					  .recv_cq = cn->data_cq,
					  .max_send_wr = 1024,
					  .max_recv_wr = 512,
					  .max_msg_size = 65536 };

		if (i != cn->id) {
			ret = coh_ep_new(cn->fab, &ca, &cn->ctl[i]);
			if (ret)
				return ret;
			for (s = 0; s < CTL_SLOTS; s++) {
				ret = ctl_post_recv(cn, i, s);
				if (ret)
					return ret;
			}
		}
		ret = coh_ep_new(cn->fab, &da, &cn->ep[i]);
		if (ret)
			return ret;
	}
	return conf_barrier(cn);
}

/* node_down - tear down in reverse; a scenario may already have closed some of it. */
static int node_down(struct conf_node *cn)
{
	uint32_t i;
	int ret = 0, r;

	for (i = 0; i < cn->n; i++) {
		r = coh_ep_delete(&cn->ep[i]);
		ret = ret ? ret : r;
		r = coh_ep_delete(&cn->ctl[i]);
		ret = ret ? ret : r;
	}
	r = coh_mr_delete(&cn->ctl_mr);
	ret = ret ? ret : r;
	r = coh_cq_delete(&cn->data_cq);
	ret = ret ? ret : r;
	r = coh_cq_delete(&cn->ctl_cq);
	ret = ret ? ret : r;
	r = coh_fabric_close(&cn->fab);
	return ret ? ret : r;
}

static int child_main(const char *name, uint32_t id, uint32_t n, const char *cluster,
		      conf_scenario_fn fn)
{
	struct conf_node *cn;
	int ret;

	cn = calloc(1, sizeof(*cn));
	if (!cn)
		return 2;
	cn->id = id;
	cn->n = n;
	cn->provider = conf_provider();
	ret = node_up(cn, cluster);
	if (ret) {
		fprintf(stderr, "node %u: %s: bring-up failed: %s\n", id, name, coh_strerror(ret));
		node_down(cn);
		free(cn);
		return 3;
	}
	ret = fn(cn);
	if (ret) {
		fprintf(stderr, "node %u: scenario %s failed\n", id, name);
		/* Leave without the goodbye barrier; peers see this node go down. */
		node_down(cn);
		free(cn);
		return 1;
	}
	ret = goodbye(cn);
	if (ret)
		fprintf(stderr, "node %u: %s: goodbye: %s\n", id, name, coh_strerror(ret));
	if (node_down(cn) && !ret) {
		fprintf(stderr, "node %u: %s: teardown reported an error\n", id, name);
		ret = -EIO;
	}
	free(cn);
	return ret ? 4 : 0;
}

int conf_run(const char *name, uint32_t n, conf_scenario_fn fn, uint64_t expect_killed,
	     unsigned int timeout_s)
{
	pid_t pids[CONF_MAX_NODES];
	char cluster[512];
	int failed = 0;
	uint32_t i;

	if (n > CONF_MAX_NODES || conf_cluster_new(cluster, sizeof(cluster), n)) {
		fprintf(stderr, "%s: cannot make a cluster for %u nodes\n", name, n);
		return 1;
	}
	fflush(NULL);
	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			fprintf(stderr, "%s: fork: %s\n", name, strerror(errno));
			while (i--)
				kill(pids[i], SIGKILL);
			failed = 1;
			n = 0;
			break;
		}
		if (pids[i] == 0) {
			alarm(timeout_s);
			_exit(child_main(name, i, n, cluster, fn));
		}
	}
	for (i = 0; i < n; i++) {
		int st;

		if (waitpid(pids[i], &st, 0) < 0) {
			fprintf(stderr, "%s: waitpid: %s\n", name, strerror(errno));
			failed = 1;
			continue;
		}
		if (expect_killed & (1ull << i)) {
			if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
				fprintf(stderr, "%s: node %u should have been killed\n", name, i);
				failed = 1;
			}
		} else if (WIFSIGNALED(st)) {
			fprintf(stderr, "%s: node %u died of signal %d%s\n", name, i, WTERMSIG(st),
				WTERMSIG(st) == SIGALRM ? " (timeout)" : "");
			failed = 1;
		} else if (WEXITSTATUS(st)) {
			fprintf(stderr, "%s: node %u exited %d\n", name, i, WEXITSTATUS(st));
			failed = 1;
		}
	}
	conf_cluster_cleanup(cluster);
	return failed;
}

/* auth_child - one side of conf_auth_pair: open a fabric with @secret (NULL: none) and an
 * endpoint to the other node; on success, a message each way proves the endpoint works. */
static int auth_child(const char *cluster, uint32_t id, const char *secret)
{
	struct coh_fabric_attr fa = { .provider = conf_provider(),
				      .cluster = cluster,
				      .node_id = id,
				      .timeout_ms = CONF_TIMEOUT_MS,
				      .secret = secret,
				      .secret_len = secret ? (uint32_t)strlen(secret) : 0 };
	struct coh_fabric *fab = NULL;
	struct coh_cq *cq = NULL;
	struct coh_mr *mr = NULL;
	struct coh_ep *ep = NULL;
	struct coh_wc wc;
	int ret, n, got = 0;

	ret = coh_fabric_open(&fa, &fab);
	if (ret)
		return ret;
	ret = coh_cq_new(fab, 16, &cq);
	if (!ret)
		ret = coh_mr_new(fab, 64, COH_ACCESS_LOCAL_WRITE, &mr);
	if (!ret) {
		struct coh_ep_attr ea = { .peer = 1 - id,
					  .channel = 0,
					  .send_cq = cq,
					  .recv_cq = cq,
					  .max_send_wr = 4,
					  .max_recv_wr = 4,
					  .max_msg_size = 64,
					  .timeout_ms = CONF_TIMEOUT_MS };

		ret = coh_ep_new(fab, &ea, &ep);
	}
	if (!ret)
		ret = coh_ep_post_recv(ep, mr, 32, 32, 1);
	if (!ret)
		ret = coh_ep_send_sync(ep, mr, 0, 8);
	while (!ret && !got) {
		n = coh_cq_wait(cq, &wc, 1, CONF_TIMEOUT_MS);
		if (n < 0)
			ret = n;
		else if (n == 0)
			ret = -ETIMEDOUT;
		else if (wc.status)
			ret = wc.status;
		else if (wc.opcode == COH_WC_RECV)
			got = 1;
	}
	coh_ep_delete(&ep);
	coh_mr_delete(&mr);
	coh_cq_delete(&cq);
	coh_fabric_close(&fab);
	return ret;
}

int conf_auth_pair(const char *secret0, const char *secret1, int res[2])
{
	const char *secret[2] = { secret0, secret1 };
	char cluster[512];
	pid_t pids[2];
	int *shared, failed = 0;
	uint32_t i;

	shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED || conf_cluster_new(cluster, sizeof(cluster), 2))
		return 1;
	fflush(NULL);
	for (i = 0; i < 2; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			if (i)
				kill(pids[0], SIGKILL);
			failed = 1;
			break;
		}
		if (pids[i] == 0) {
			alarm(4 * CONF_TIMEOUT_MS / 1000);
			shared[i] = auth_child(cluster, i, secret[i]);
			_exit(0);
		}
	}
	for (i = 0; i < 2 && !(failed && !i); i++) {
		int st;

		if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "auth: node %u did not end normally\n", i);
			failed = 1;
		}
	}
	res[0] = shared[0];
	res[1] = shared[1];
	munmap(shared, 4096);
	conf_cluster_cleanup(cluster);
	return failed;
}
