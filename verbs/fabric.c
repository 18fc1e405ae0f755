/*
 * fabric.c - the provider-independent half of the fabric: it checks every argument, picks the
 * provider, encodes and decodes region descriptors, keeps the peer-failure event queue, accounts
 * for queue depths, and implements the blocking helpers on top of post and poll.
 *
 * Providers (shm.c, rdma.c) see only checked arguments, so each check lives here once. What this
 * file leaves out: anything that touches memory of another node or a device; that is the
 * providers' job, behind struct coh_fabric_ops.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "verbs_internal.h"

static const struct coh_fabric_ops *const providers[] = {
	&shm_ops,
#ifdef COHORT_HAVE_RDMA
	&rdma_ops,
#endif
};

/* verbs_now_ns - monotonic time in nanoseconds. */
uint64_t verbs_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Fabric lifetime. */

int coh_fabric_open(const struct coh_fabric_attr *attr, struct coh_fabric **fabp)
{
	const struct coh_fabric_ops *ops = NULL;
	size_t i;

	if (!attr || !fabp || !attr->provider || !attr->cluster || !attr->cluster[0])
		return -EINVAL;
	if (attr->node_id >= COH_FABRIC_MAX_NODES)
		return -EINVAL;
	for (i = 0; i < sizeof(providers) / sizeof(providers[0]); i++) {
		if (!strcmp(providers[i]->name, attr->provider))
			ops = providers[i];
	}
	if (!ops) {
		if (!strcmp(attr->provider, "rdma"))
			return -EPROTONOSUPPORT;
		COH_LOG_ERR("unknown fabric provider '%s'", attr->provider);
		return -ENOENT;
	}
	return ops->fabric_open(attr, fabp);
}

int coh_fabric_close(struct coh_fabric **fabp)
{
	struct coh_fabric *fab;
	unsigned int mr, cq, ep;
	int ret, busy = 0;

	if (!fabp || !*fabp)
		return 0;
	fab = *fabp;
	*fabp = NULL;
	mr = atomic_load(&fab->n_mr);
	cq = atomic_load(&fab->n_cq);
	ep = atomic_load(&fab->n_ep);
	if (mr || cq || ep) {
		COH_LOG_ERR("node %u: closing fabric with %u regions, %u queues, %u endpoints left",
			    fab->node_id, mr, cq, ep);
		busy = -EBUSY;
	}
	ret = fab->ops->fabric_close(fab);
	return ret ? ret : busy;
}

int fabric_base_init(struct coh_fabric *fab, const struct coh_fabric_ops *ops,
		     const struct coh_fabric_attr *attr)
{
	int ret;

	fab->ops = ops;
	fab->node_id = attr->node_id;
	fab->timeout_ms = attr->timeout_ms ? attr->timeout_ms : COH_FABRIC_DEFAULT_TIMEOUT_MS;
	fab->ev_pending = 0;
	if (attr->secret_len > COH_FABRIC_SECRET_MAX || (attr->secret_len && !attr->secret) ||
	    (attr->secret && !attr->secret_len)) {
		COH_LOG_ERR("node %u: the cluster secret must be 1 to %u bytes", attr->node_id,
			    COH_FABRIC_SECRET_MAX);
		return -EINVAL;
	}
	fab->secret_len = attr->secret_len;
	if (attr->secret_len)
		memcpy(fab->secret, attr->secret, attr->secret_len);
	atomic_init(&fab->n_mr, 0);
	atomic_init(&fab->n_cq, 0);
	atomic_init(&fab->n_ep, 0);
	fab->ev_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fab->ev_fd < 0)
		return -errno;
	ret = pthread_mutex_init(&fab->ev_lock, NULL);
	if (ret) {
		close(fab->ev_fd);
		return -ret;
	}
	return 0;
}

int verbs_mac(const struct coh_fabric *fab, const char *label, const struct verbs_mac_part *parts,
	      size_t n, uint8_t out[VERBS_MAC_LEN])
{
	unsigned int len = VERBS_MAC_LEN;
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM params[2];
	EVP_MAC *mac;
	size_t i, outl = 0;
	int ret = -EACCES;

	if (!fab->secret_len)
		return -EACCES;
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (mac)
		ctx = EVP_MAC_CTX_new(mac);
	params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!ctx || !EVP_MAC_init(ctx, fab->secret, fab->secret_len, params) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)label, strlen(label) + 1))
		goto out;
	for (i = 0; i < n; i++) {
		if (!EVP_MAC_update(ctx, parts[i].p, parts[i].len))
			goto out;
	}
	if (EVP_MAC_final(ctx, out, &outl, len) && outl == len)
		ret = 0;
out:
	if (ret)
		COH_LOG_ERR("node %u: HMAC-SHA256 failed in libcrypto", fab->node_id);
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return ret;
}

bool verbs_mac_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

void fabric_base_fini(struct coh_fabric *fab)
{
	OPENSSL_cleanse(fab->secret, sizeof(fab->secret));
	pthread_mutex_destroy(&fab->ev_lock);
	close(fab->ev_fd);
}

int coh_fabric_query(const struct coh_fabric *fab, struct coh_fabric_info *info)
{
	if (!fab || !info)
		return -EINVAL;
	memset(info, 0, sizeof(*info));
	fab->ops->fabric_query(fab, info);
	return 0;
}

int coh_fabric_fence_peer(struct coh_fabric *fab, uint32_t peer)
{
	if (!fab || peer >= COH_FABRIC_MAX_NODES || peer == fab->node_id)
		return -EINVAL;
	if (!fab->ops->fence_peer)
		return -EOPNOTSUPP;
	return fab->ops->fence_peer(fab, peer);
}

int coh_fabric_partition(struct coh_fabric *fab, uint64_t peers)
{
	if (!fab)
		return -EINVAL;
	if (!fab->ops->partition)
		return -EOPNOTSUPP;
	return fab->ops->partition(fab, peers & ~(1ull << fab->node_id));
}

uint32_t coh_fabric_node_id(const struct coh_fabric *fab)
{
	return fab->node_id;
}

/* Events. A bitmap rather than a queue: one PEER_DOWN per peer is pending at most, so the queue
 * is bounded by the node count and no event can be dropped for lack of room. */

void fabric_peer_down(struct coh_fabric *fab, uint32_t peer, uint64_t incarnation)
{
	uint64_t one = 1;

	if (peer >= COH_FABRIC_MAX_NODES)
		return;
	pthread_mutex_lock(&fab->ev_lock);
	fab->ev_pending |= 1ull << peer;
	fab->ev_incarnation[peer] = incarnation;
	/* Cannot fail short of a counter overflow, which a bounded number of peers never reaches. */
	if (write(fab->ev_fd, &one, sizeof(one)) < 0)
		COH_LOG_WARN("eventfd write: %s", strerror(errno));
	pthread_mutex_unlock(&fab->ev_lock);
	COH_LOG_INFO("node %u: peer %u (incarnation %" PRIu64 ") is down", fab->node_id, peer,
		     incarnation);
}

static int event_take(struct coh_fabric *fab, struct coh_event *ev)
{
	uint64_t drain;
	int peer, ret = -EAGAIN;

	pthread_mutex_lock(&fab->ev_lock);
	if (fab->ev_pending) {
		peer = __builtin_ctzll(fab->ev_pending);
		fab->ev_pending &= ~(1ull << peer);
		ev->type = COH_EVENT_PEER_DOWN;
		ev->peer = (uint32_t)peer;
		ev->incarnation = fab->ev_incarnation[peer];
		ret = 0;
	}
	/* Keep the eventfd readable exactly while something is pending. */
	if (!fab->ev_pending && read(fab->ev_fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
		COH_LOG_WARN("eventfd read: %s", strerror(errno));
	pthread_mutex_unlock(&fab->ev_lock);
	return ret;
}

int coh_fabric_event_get(struct coh_fabric *fab, struct coh_event *ev, int timeout_ms)
{
	uint64_t deadline;
	int ret;

	if (!fab || !ev || timeout_ms < 0)
		return -EINVAL;
	deadline = verbs_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		struct pollfd pfd = { .fd = fab->ev_fd, .events = POLLIN };
		uint64_t now;

		ret = event_take(fab, ev);
		if (ret != -EAGAIN)
			return ret;
		if (!timeout_ms)
			return -EAGAIN;
		now = verbs_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		ret = poll(&pfd, 1, (int)((deadline - now + 999999) / 1000000));
		if (ret < 0 && errno != EINTR)
			return -errno;
	}
}

int coh_fabric_event_fd(const struct coh_fabric *fab)
{
	return fab ? fab->ev_fd : -EINVAL;
}

/* Memory regions. */

int coh_mr_new(struct coh_fabric *fab, size_t len, uint32_t access, struct coh_mr **mrp)
{
	int ret;

	if (!fab || !mrp || !len || len > COH_FABRIC_MAX_XFER || (access & ~COH_ACCESS_ALL))
		return -EINVAL;
	ret = fab->ops->mr_new(fab, len, access, mrp);
	if (!ret)
		atomic_fetch_add(&fab->n_mr, 1);
	return ret;
}

int coh_mr_reg(struct coh_fabric *fab, void *buf, size_t len, uint32_t access, struct coh_mr **mrp)
{
	int ret;

	if (!fab || !buf || !mrp || !len || len > COH_FABRIC_MAX_XFER || (access & ~COH_ACCESS_ALL))
		return -EINVAL;
	ret = fab->ops->mr_reg(fab, buf, len, access, mrp);
	if (!ret)
		atomic_fetch_add(&fab->n_mr, 1);
	return ret;
}

int coh_mr_new_pmem(struct coh_fabric *fab, const char *path, size_t len, uint32_t access,
		    struct coh_mr **mrp)
{
	int ret;

	if (!fab || !mrp || !len || len > COH_FABRIC_MAX_XFER || (access & ~COH_ACCESS_ALL))
		return -EINVAL;
	if (path && !path[0])
		return -EINVAL;
	ret = fab->ops->mr_new_pmem(fab, path, len, access, mrp);
	if (!ret)
		atomic_fetch_add(&fab->n_mr, 1);
	return ret;
}

enum coh_persist coh_mr_persistence(const struct coh_mr *mr)
{
	return mr ? mr->persist : COH_PERSIST_NONE;
}

int coh_mr_delete(struct coh_mr **mrp)
{
	struct coh_mr *mr;
	struct coh_fabric *fab;

	if (!mrp || !*mrp)
		return 0;
	mr = *mrp;
	*mrp = NULL;
	fab = mr->fab;
	atomic_fetch_sub(&fab->n_mr, 1);
	return fab->ops->mr_delete(mr);
}

void *coh_mr_addr(const struct coh_mr *mr)
{
	return mr ? mr->addr : NULL;
}

size_t coh_mr_len(const struct coh_mr *mr)
{
	return mr ? mr->len : 0;
}

int coh_mr_persist(struct coh_mr *mr, size_t off, size_t len)
{
	if (!mr || off > mr->len || len > mr->len - off)
		return -EINVAL;
	if (!len || !mr->fab->ops->mr_persist)
		return 0;
	return mr->fab->ops->mr_persist(mr, off, len);
}

int coh_mr_rekey(struct coh_mr *mr)
{
	if (!mr || !(mr->access & COH_ACCESS_REMOTE_MASK))
		return -EINVAL;
	return mr->fab->ops->mr_rekey(mr);
}

/* Descriptors: little-endian, fixed offsets, so that nodes of any build agree on the layout. */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return get16(p) | (uint32_t)get16(p + 2) << 16;
}

static uint64_t get64(const uint8_t *p)
{
	return get32(p) | (uint64_t)get32(p + 4) << 32;
}

/*
 * Layout: 0 magic(2) 2 version(1) 3 provider(1) 4 node(4) 8 region(4) 12 rkey(4) 16 access(4)
 * 20 persist(1) 21 reserved(3, zero) 24 addr(8) 32 len(8) 40 incarnation(8).
 *
 * persist took the first of four reserved bytes without a new version: every decoder has
 * required them to be zero, so an older node refuses (-EPROTO) the descriptor of a persistent
 * region rather than misreading it, and reads every other descriptor as before.
 */
void mr_desc_encode(const struct coh_mr_fields *f, struct coh_mr_desc *desc)
{
	uint8_t *p = desc->bytes;

	memset(desc, 0, sizeof(*desc));
	put16(p, COH_MR_DESC_MAGIC);
	p[2] = COH_MR_DESC_VERSION;
	p[3] = f->provider;
	put32(p + 4, f->node);
	put32(p + 8, f->region);
	put32(p + 12, f->rkey);
	put32(p + 16, f->access);
	p[20] = f->persist;
	put64(p + 24, f->addr);
	put64(p + 32, f->len);
	put64(p + 40, f->incarnation);
}

int mr_desc_decode(const struct coh_mr_desc *desc, struct coh_mr_fields *f)
{
	const uint8_t *p = desc->bytes;
	struct coh_mr_fields d;

	if (get16(p) != COH_MR_DESC_MAGIC || p[2] != COH_MR_DESC_VERSION)
		return -EPROTO;
	d.provider = p[3];
	d.node = get32(p + 4);
	d.region = get32(p + 8);
	d.rkey = get32(p + 12);
	d.access = get32(p + 16);
	d.addr = get64(p + 24);
	d.len = get64(p + 32);
	d.incarnation = get64(p + 40);
	d.persist = p[20];
	if (d.provider != COH_PROVIDER_SHM && d.provider != COH_PROVIDER_RDMA)
		return -EPROTO;
	if (d.node >= COH_FABRIC_MAX_NODES || d.persist > COH_PERSIST_PMEM || p[21] || p[22] ||
	    p[23])
		return -EPROTO;
	/* Only remote rights are meaningful to an importer, and there must be at least one. */
	if ((d.access & ~COH_ACCESS_ALL) || !(d.access & COH_ACCESS_REMOTE_MASK))
		return -EPROTO;
	if (!d.len || d.len > COH_FABRIC_MAX_XFER || d.addr + d.len < d.addr)
		return -EPROTO;
	*f = d;
	return 0;
}

int coh_mr_export(const struct coh_mr *mr, struct coh_mr_desc *desc)
{
	struct coh_mr_fields f;

	if (!mr || !desc || !(mr->access & COH_ACCESS_REMOTE_MASK))
		return -EINVAL;
	f.provider = (uint8_t)mr->fab->ops->id;
	f.node = mr->fab->node_id;
	f.region = mr->region;
	f.rkey = mr->rkey;
	f.access = mr->access & COH_ACCESS_REMOTE_MASK;
	f.addr = mr->remote_addr;
	f.len = mr->len;
	f.incarnation = mr->incarnation;
	f.persist = (uint8_t)mr->persist;
	mr_desc_encode(&f, desc);
	return 0;
}

int coh_rmr_import(struct coh_ep *ep, const struct coh_mr_desc *desc, struct coh_rmr **rmrp)
{
	struct coh_mr_fields f;
	int ret;

	if (!ep || !desc || !rmrp)
		return -EINVAL;
	ret = mr_desc_decode(desc, &f);
	if (ret) {
		COH_LOG_WARN("node %u: malformed region descriptor from peer %u", ep->fab->node_id,
			     ep->attr.peer);
		return ret;
	}
	if (f.provider != ep->fab->ops->id || f.node != ep->attr.peer)
		return -EINVAL;
	ret = ep->fab->ops->rmr_import(ep, &f, rmrp);
	if (!ret)
		ep->n_rmr++;
	return ret;
}

int coh_rmr_delete(struct coh_rmr **rmrp)
{
	struct coh_rmr *rmr;
	struct coh_ep *ep;

	if (!rmrp || !*rmrp)
		return 0;
	rmr = *rmrp;
	*rmrp = NULL;
	ep = rmr->ep;
	ep->n_rmr--;
	return ep->fab->ops->rmr_delete(rmr);
}

size_t coh_rmr_len(const struct coh_rmr *rmr)
{
	return rmr ? (size_t)rmr->f.len : 0;
}

enum coh_persist coh_rmr_persistence(const struct coh_rmr *rmr)
{
	return rmr ? (enum coh_persist)rmr->f.persist : COH_PERSIST_NONE;
}

/* Completion queues. */

int coh_cq_new(struct coh_fabric *fab, uint32_t depth, struct coh_cq **cqp)
{
	struct coh_wc *stash;
	struct coh_cq *cq;
	int ret;

	if (!fab || !cqp || !depth || depth > COH_CQ_MAX_DEPTH)
		return -EINVAL;
	stash = calloc(depth, sizeof(*stash));
	if (!stash)
		return -ENOMEM;
	ret = fab->ops->cq_new(fab, depth, &cq);
	if (ret)
		goto err_free_stash;
	cq->fab = fab;
	cq->depth = depth;
	cq->reserved = 0;
	cq->send_pending = 0;
	cq->n_ep = 0;
	cq->stash = stash;
	cq->stash_head = 0;
	cq->stash_count = 0;
	atomic_fetch_add(&fab->n_cq, 1);
	*cqp = cq;
	return 0;

err_free_stash:
	free(stash);
	return ret;
}

int coh_cq_delete(struct coh_cq **cqp)
{
	struct coh_fabric *fab;
	struct coh_cq *cq;
	int ret, busy = 0;

	if (!cqp || !*cqp)
		return 0;
	cq = *cqp;
	*cqp = NULL;
	fab = cq->fab;
	if (cq->n_ep) {
		COH_LOG_ERR("node %u: deleting a completion queue with %u endpoints attached",
			    fab->node_id, cq->n_ep);
		busy = -EBUSY;
	}
	free(cq->stash);
	atomic_fetch_sub(&fab->n_cq, 1);
	ret = fab->ops->cq_delete(cq);
	return ret ? ret : busy;
}

static void cq_account(struct coh_cq *cq, const struct coh_wc *wc, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if (wc[i].opcode != COH_WC_RECV && cq->send_pending)
			cq->send_pending--;
	}
}

static int cq_poll_checked(struct coh_cq *cq, struct coh_wc *wc, int max, bool use_stash)
{
	int n = 0, got;

	while (use_stash && n < max && cq->stash_count) {
		wc[n++] = cq->stash[cq->stash_head];
		cq->stash_head = (cq->stash_head + 1) % cq->depth;
		cq->stash_count--;
	}
	if (n == max)
		return n;
	got = cq->fab->ops->cq_poll(cq, wc + n, max - n);
	if (got < 0)
		return n ? n : got;
	cq_account(cq, wc + n, got);
	return n + got;
}

int coh_cq_poll(struct coh_cq *cq, struct coh_wc *wc, int max)
{
	if (!cq || !wc || max <= 0)
		return -EINVAL;
	return cq_poll_checked(cq, wc, max, true);
}

/* Spin this long before sleeping: long enough to catch a reply on a fast fabric without a
 * wake-up, short enough that an idle waiter gives its core back almost at once. */
#define CQ_SPIN_NS 20000ull

/* A wait that has lasted this long is a long one: the thread's sleep hook hears of it (a thread
 * scheduler may start another thread meanwhile). Longer than an operation on shm takes, shorter
 * than a round trip on rxe. */
#define CQ_HANDOFF_NS 5000ull

/* The calling thread's sleep hook (coh_thread_sleep_hook_set). */
static __thread void (*cq_sleep_fn)(void *arg, bool sleeping);
static __thread void *cq_sleep_arg;

void coh_thread_sleep_hook_set(void (*fn)(void *arg, bool sleeping), void *arg)
{
	cq_sleep_fn = fn;
	cq_sleep_arg = arg;
}

void coh_thread_sleeping(bool sleeping)
{
	if (cq_sleep_fn)
		cq_sleep_fn(cq_sleep_arg, sleeping);
}

/* cq_wait - wait for completions. The blocking helpers pass @use_stash false: the stash holds
 * what they set aside, and taking it back would keep them from ever reaching their own. The clock
 * is read only once the queue is found empty, so a completion that is already there (a one-sided
 * operation on shm completes as it is posted) costs no clock read; *@startp, when it is 0, gets
 * the time the wait began, for a caller that waits again. */
static int cq_wait_inner(struct coh_cq *cq, struct coh_wc *wc, int max, int timeout_ms,
			 bool use_stash, uint64_t *startp, bool *hooked)
{
	uint64_t start = 0, deadline = 0, now;
	int n, ret;

	for (;;) {
		n = cq_poll_checked(cq, wc, max, use_stash);
		if (n)
			return n;
		/* Only the application's waits take a wake: the blocking helpers wait for their own
		 * completion, whatever else the thread has to do. */
		if (use_stash && atomic_load_explicit(&cq->woken, memory_order_relaxed) &&
		    atomic_exchange(&cq->woken, false))
			return -EINTR;
		if (!timeout_ms)
			return -EAGAIN;
		now = verbs_now_ns();
		if (!start) {
			start = now;
			deadline = start + (uint64_t)timeout_ms * 1000000ull;
			if (startp && !*startp)
				*startp = start;
		}
		if (now >= deadline)
			return -ETIMEDOUT;
		if (cq_sleep_fn && !*hooked && now - start >= CQ_HANDOFF_NS) {
			*hooked = true;
			cq_sleep_fn(cq_sleep_arg, true);
		}
		if (now - start < CQ_SPIN_NS)
			continue;
		ret = cq->fab->ops->cq_sleep(cq, (int)((deadline - now + 999999) / 1000000));
		if (ret && ret != -ETIMEDOUT)
			return ret;
	}
}

/* cq_wait - cq_wait_inner, and the end of a long wait told to the thread's sleep hook. */
static int cq_wait(struct coh_cq *cq, struct coh_wc *wc, int max, int timeout_ms, bool use_stash,
		   uint64_t *startp)
{
	bool hooked = false;
	int ret = cq_wait_inner(cq, wc, max, timeout_ms, use_stash, startp, &hooked);

	if (hooked)
		cq_sleep_fn(cq_sleep_arg, false);
	return ret;
}

int coh_cq_wait(struct coh_cq *cq, struct coh_wc *wc, int max, int timeout_ms)
{
	if (!cq || !wc || max <= 0 || timeout_ms < 0)
		return -EINVAL;
	return cq_wait(cq, wc, max, timeout_ms, true, NULL);
}

int coh_cq_wake(struct coh_cq *cq)
{
	if (!cq)
		return -EINVAL;
	/* The flag first: a sleeper the provider wakes, or one about to sleep, finds it. */
	atomic_store(&cq->woken, true);
	cq->fab->ops->cq_wake(cq);
	return 0;
}

/* Endpoints. */

static int ep_attr_fill(const struct coh_fabric *fab, const struct coh_ep_attr *in,
			struct coh_ep_attr *out, uint32_t max_msg)
{
	*out = *in;
	if (out->peer >= COH_FABRIC_MAX_NODES || out->channel > COH_EP_MAX_CHANNEL)
		return -EINVAL;
	if (!out->send_cq || !out->recv_cq || out->send_cq->fab != fab || out->recv_cq->fab != fab)
		return -EINVAL;
	if (!out->max_send_wr)
		out->max_send_wr = COH_EP_DEFAULT_WR;
	if (!out->max_recv_wr)
		out->max_recv_wr = COH_EP_DEFAULT_WR;
	if (!out->max_msg_size)
		out->max_msg_size = COH_EP_DEFAULT_MSG;
	if (!out->timeout_ms)
		out->timeout_ms = fab->timeout_ms;
	if (out->max_send_wr > COH_EP_MAX_WR || out->max_recv_wr > COH_EP_MAX_WR ||
	    out->max_msg_size > max_msg)
		return -EINVAL;
	return 0;
}

/* Reserve queue room so that a queue can never overflow; -ENOSPC when it would. */
static int ep_reserve(struct coh_ep_attr *a)
{
	uint32_t send = a->max_send_wr, recv = a->max_recv_wr;

	if (a->send_cq == a->recv_cq) {
		if ((uint64_t)a->send_cq->reserved + send + recv > a->send_cq->depth)
			return -ENOSPC;
	} else if (a->send_cq->reserved + (uint64_t)send > a->send_cq->depth ||
		   a->recv_cq->reserved + (uint64_t)recv > a->recv_cq->depth) {
		return -ENOSPC;
	}
	a->send_cq->reserved += send;
	a->recv_cq->reserved += recv;
	a->send_cq->n_ep++;
	a->recv_cq->n_ep++;
	return 0;
}

static void ep_unreserve(const struct coh_ep_attr *a)
{
	a->send_cq->reserved -= a->max_send_wr;
	a->recv_cq->reserved -= a->max_recv_wr;
	a->send_cq->n_ep--;
	a->recv_cq->n_ep--;
}

int coh_ep_new(struct coh_fabric *fab, const struct coh_ep_attr *attr, struct coh_ep **epp)
{
	struct coh_fabric_info info = { 0 };
	struct coh_ep_attr a;
	struct coh_mr *scratch;
	struct coh_ep *ep;
	int ret;

	if (!fab || !attr || !epp)
		return -EINVAL;
	fab->ops->fabric_query(fab, &info);
	ret = ep_attr_fill(fab, attr, &a, info.max_msg_size);
	if (ret)
		return ret;
	ret = ep_reserve(&a);
	if (ret)
		return ret;
	ret = fab->ops->mr_new(fab, sizeof(uint64_t), COH_ACCESS_LOCAL_WRITE, &scratch);
	if (ret)
		goto err_unreserve;
	ret = fab->ops->ep_new(fab, &a, &ep);
	if (ret)
		goto err_delete_scratch;
	ep->fab = fab;
	ep->attr = a;
	ep->scratch = scratch;
	ep->n_rmr = 0;
	atomic_fetch_add(&fab->n_ep, 1);
	*epp = ep;
	return 0;

err_delete_scratch:
	fab->ops->mr_delete(scratch);
err_unreserve:
	ep_unreserve(&a);
	return ret;
}

int coh_ep_new_many(struct coh_fabric *fab, const struct coh_ep_attr *attrs, uint32_t n,
		    struct coh_ep **eps)
{
	struct coh_fabric_info info = { 0 };
	struct coh_ep_attr *a = NULL;
	struct coh_mr **scratch = NULL;
	struct coh_ep **made = NULL;
	uint32_t i, reserved = 0, mrs = 0;
	int ret = 0;

	if (!fab || (n && (!attrs || !eps)))
		return -EINVAL;
	if (!n)
		return 0;
	if (!fab->ops->ep_new_many) {
		/* One by one: the provider's handshake is quick (shm). */
		for (i = 0; i < n; i++) {
			ret = coh_ep_new(fab, &attrs[i], &eps[i]);
			if (ret) {
				while (i--)
					coh_ep_delete(&eps[i]);
				return ret;
			}
		}
		return 0;
	}
	fab->ops->fabric_query(fab, &info);
	a = calloc(n, sizeof(*a));
	scratch = calloc(n, sizeof(*scratch));
	made = calloc(n, sizeof(*made));
	if (!a || !scratch || !made) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n && !ret; i++) {
		ret = ep_attr_fill(fab, &attrs[i], &a[i], info.max_msg_size);
		if (!ret)
			ret = ep_reserve(&a[i]);
		if (!ret)
			reserved++;
	}
	for (i = 0; i < n && !ret; i++) {
		ret = fab->ops->mr_new(fab, sizeof(uint64_t), COH_ACCESS_LOCAL_WRITE, &scratch[i]);
		if (!ret)
			mrs++;
	}
	if (!ret)
		ret = fab->ops->ep_new_many(fab, a, n, made);
	if (!ret) {
		for (i = 0; i < n; i++) {
			made[i]->fab = fab;
			made[i]->attr = a[i];
			made[i]->scratch = scratch[i];
			made[i]->n_rmr = 0;
			atomic_fetch_add(&fab->n_ep, 1);
			eps[i] = made[i];
		}
		goto out;
	}
	for (i = 0; i < mrs; i++)
		fab->ops->mr_delete(scratch[i]);
	for (i = 0; i < reserved; i++)
		ep_unreserve(&a[i]);
out:
	free(a);
	free(scratch);
	free(made);
	return ret;
}

int coh_ep_delete(struct coh_ep **epp)
{
	struct coh_fabric *fab;
	struct coh_mr *scratch;
	struct coh_ep *ep;
	int ret, ret2;

	if (!epp || !*epp)
		return 0;
	ep = *epp;
	*epp = NULL;
	fab = ep->fab;
	scratch = ep->scratch;
	if (ep->n_rmr)
		COH_LOG_ERR("node %u: deleting endpoint to %u with %u remote regions imported",
			    fab->node_id, ep->attr.peer, ep->n_rmr);
	ep_unreserve(&ep->attr);
	atomic_fetch_sub(&fab->n_ep, 1);
	ret = fab->ops->ep_delete(ep);
	ret2 = fab->ops->mr_delete(scratch);
	return ret ? ret : ret2;
}

uint32_t coh_ep_peer(const struct coh_ep *ep)
{
	return ep->attr.peer;
}

bool coh_ep_is_up(const struct coh_ep *ep)
{
	return ep && ep->fab->ops->ep_is_up(ep);
}

uint64_t coh_ep_peer_incarnation(const struct coh_ep *ep)
{
	return ep ? ep->fab->ops->ep_peer_inc(ep) : 0;
}

/* Posting. */

static bool range_ok(size_t off, size_t len, size_t total)
{
	return len && len <= total && off <= total - len;
}

static int post_checked(struct coh_ep *ep, const struct coh_op *op)
{
	bool needs_local_write =
	    op->code == COH_OP_READ || op->code == COH_OP_CAS || op->code == COH_OP_FAA;
	int ret;

	if (!ep)
		return -EINVAL;
	if (op->lmr) {
		if (op->lmr->fab != ep->fab || !range_ok(op->loff, op->len, op->lmr->len))
			return -EINVAL;
		if (needs_local_write && !(op->lmr->access & COH_ACCESS_LOCAL_WRITE))
			return -EINVAL;
	} else if (op->code != COH_OP_FLUSH) {
		return -EINVAL;
	}
	if (op->code != COH_OP_SEND) {
		if (!op->rmr || op->rmr->ep->attr.peer != ep->attr.peer ||
		    op->rmr->ep->fab != ep->fab)
			return -EINVAL;
		/* Remote bounds are the provider's to check, but an offset no region can have is
		 * a local mistake. */
		if (!op->len || op->len > COH_FABRIC_MAX_XFER || op->roff > COH_FABRIC_MAX_XFER)
			return -EINVAL;
	} else if (op->len > ep->attr.max_msg_size) {
		return -EINVAL;
	}
	if ((op->code == COH_OP_CAS || op->code == COH_OP_FAA) && (op->roff & 7))
		return -EINVAL;
	ret = ep->fab->ops->post(ep, op);
	if (!ret)
		ep->attr.send_cq->send_pending++;
	return ret;
}

int coh_ep_post_write(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		      uint64_t roff, size_t len, uint64_t wr_id)
{
	struct coh_op op = { .code = COH_OP_WRITE,
			     .lmr = lmr,
			     .loff = loff,
			     .rmr = rmr,
			     .roff = roff,
			     .len = len,
			     .wr_id = wr_id };

	return post_checked(ep, &op);
}

int coh_ep_post_read(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		     uint64_t roff, size_t len, uint64_t wr_id)
{
	struct coh_op op = { .code = COH_OP_READ,
			     .lmr = lmr,
			     .loff = loff,
			     .rmr = rmr,
			     .roff = roff,
			     .len = len,
			     .wr_id = wr_id };

	return post_checked(ep, &op);
}

int coh_ep_post_cas(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		    uint64_t roff, uint64_t compare, uint64_t swap, uint64_t wr_id)
{
	struct coh_op op = { .code = COH_OP_CAS,
			     .lmr = lmr,
			     .loff = loff,
			     .rmr = rmr,
			     .roff = roff,
			     .len = 8,
			     .compare = compare,
			     .swap = swap,
			     .wr_id = wr_id };

	return post_checked(ep, &op);
}

int coh_ep_post_faa(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		    uint64_t roff, uint64_t add, uint64_t wr_id)
{
	struct coh_op op = { .code = COH_OP_FAA,
			     .lmr = lmr,
			     .loff = loff,
			     .rmr = rmr,
			     .roff = roff,
			     .len = 8,
			     .compare = add,
			     .wr_id = wr_id };

	return post_checked(ep, &op);
}

int coh_ep_post_flush(struct coh_ep *ep, struct coh_rmr *rmr, uint64_t roff, size_t len,
		      uint64_t wr_id)
{
	struct coh_op op = {
		.code = COH_OP_FLUSH, .rmr = rmr, .roff = roff, .len = len, .wr_id = wr_id
	};

	return post_checked(ep, &op);
}

int coh_ep_post_send(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, size_t len, uint64_t wr_id)
{
	struct coh_op op = {
		.code = COH_OP_SEND, .lmr = lmr, .loff = loff, .len = len, .wr_id = wr_id
	};

	return post_checked(ep, &op);
}

int coh_ep_post_recv(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, size_t len, uint64_t wr_id)
{
	if (!ep || !lmr || lmr->fab != ep->fab || !range_ok(loff, len, lmr->len) ||
	    !(lmr->access & COH_ACCESS_LOCAL_WRITE))
		return -EINVAL;
	return ep->fab->ops->post_recv(ep, lmr, loff, len, wr_id);
}

/* Blocking helpers. */

#define SYNC_WR_ID 0xc04e5f0c0ffee000ull

static int sync_wait(struct coh_ep *ep)
{
	struct coh_cq *cq = ep->attr.send_cq;
	uint64_t timeout_ns = (uint64_t)ep->fab->timeout_ms * 1000000ull, start = 0, now;
	int left = (int)ep->fab->timeout_ms;
	struct coh_wc wc;
	int n;

	for (;;) {
		n = cq_wait(cq, &wc, 1, left, false, &start);
		if (n < 0)
			return n;
		if (wc.opcode != COH_WC_RECV && wc.wr_id == SYNC_WR_ID)
			return wc.status;
		/* A receive completion that shares the queue: keep it for the owner. There is
		 * room, because the stash is as deep as the queue. */
		cq->stash[(cq->stash_head + cq->stash_count) % cq->depth] = wc;
		cq->stash_count++;
		/* Waiting again: what is left of the one timeout, counted from the first wait. */
		now = verbs_now_ns();
		if (!start)
			start = now;
		if (now - start >= timeout_ns)
			return -ETIMEDOUT;
		left = (int)((timeout_ns - (now - start) + 999999) / 1000000);
	}
}

static int sync_post(struct coh_ep *ep, const struct coh_op *op)
{
	int ret;

	if (!ep)
		return -EINVAL;
	if (ep->attr.send_cq->send_pending)
		return -EBUSY;
	ret = post_checked(ep, op);
	return ret ? ret : sync_wait(ep);
}

int coh_ep_write_sync(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		      uint64_t roff, size_t len)
{
	struct coh_op op = { .code = COH_OP_WRITE,
			     .lmr = lmr,
			     .loff = loff,
			     .rmr = rmr,
			     .roff = roff,
			     .len = len,
			     .wr_id = SYNC_WR_ID };

	return sync_post(ep, &op);
}

int coh_ep_read_sync(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, struct coh_rmr *rmr,
		     uint64_t roff, size_t len)
{
	struct coh_op op = { .code = COH_OP_READ,
			     .lmr = lmr,
			     .loff = loff,
			     .rmr = rmr,
			     .roff = roff,
			     .len = len,
			     .wr_id = SYNC_WR_ID };

	return sync_post(ep, &op);
}

static int atomic_sync(struct coh_ep *ep, struct coh_op *op, uint64_t *old)
{
	int ret;

	if (!ep || !old)
		return -EINVAL;
	op->lmr = ep->scratch;
	ret = sync_post(ep, op);
	if (!ret)
		memcpy(old, ep->scratch->addr, sizeof(*old));
	return ret;
}

int coh_ep_cas_sync(struct coh_ep *ep, struct coh_rmr *rmr, uint64_t roff, uint64_t compare,
		    uint64_t swap, uint64_t *old)
{
	struct coh_op op = { .code = COH_OP_CAS,
			     .rmr = rmr,
			     .roff = roff,
			     .len = 8,
			     .compare = compare,
			     .swap = swap,
			     .wr_id = SYNC_WR_ID };

	return atomic_sync(ep, &op, old);
}

int coh_ep_faa_sync(struct coh_ep *ep, struct coh_rmr *rmr, uint64_t roff, uint64_t add,
		    uint64_t *old)
{
	struct coh_op op = { .code = COH_OP_FAA,
			     .rmr = rmr,
			     .roff = roff,
			     .len = 8,
			     .compare = add,
			     .wr_id = SYNC_WR_ID };

	return atomic_sync(ep, &op, old);
}

int coh_ep_flush_sync(struct coh_ep *ep, struct coh_rmr *rmr, uint64_t roff, size_t len)
{
	struct coh_op op = {
		.code = COH_OP_FLUSH, .rmr = rmr, .roff = roff, .len = len, .wr_id = SYNC_WR_ID
	};

	return sync_post(ep, &op);
}

int coh_ep_send_sync(struct coh_ep *ep, struct coh_mr *lmr, size_t loff, size_t len)
{
	struct coh_op op = {
		.code = COH_OP_SEND, .lmr = lmr, .loff = loff, .len = len, .wr_id = SYNC_WR_ID
	};

	return sync_post(ep, &op);
}

/* Cluster address lists, "ip:port,ip:port,...". IPv6 literals go in brackets: "[::1]:7000". */
int cluster_addr_parse(const char *cluster, uint32_t node, char *host, size_t hostlen,
		       uint16_t *port)
{
	const char *p = cluster, *end, *colon, *h, *he;
	unsigned long v;
	char *num_end;
	uint32_t i;

	if (!cluster || !host || !hostlen || !port)
		return -EINVAL;
	for (i = 0; i < node; i++) {
		p = strchr(p, ',');
		if (!p)
			return -ENOENT;
		p++;
	}
	end = strchr(p, ',');
	if (!end)
		end = p + strlen(p);
	if (end == p)
		return -EINVAL;
	if (*p == '[') {
		h = p + 1;
		he = memchr(h, ']', (size_t)(end - h));
		if (!he || he + 1 >= end || he[1] != ':')
			return -EINVAL;
		colon = he + 1;
	} else {
		h = p;
		colon = NULL;
		for (he = p; he < end; he++) {
			if (*he == ':')
				colon = he;
		}
		if (!colon)
			return -EINVAL;
		he = colon;
	}
	if (he == h || (size_t)(he - h) >= hostlen)
		return -EINVAL;
	if (colon + 1 >= end || colon[1] < '0' || colon[1] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(colon + 1, &num_end, 10);
	if (errno || num_end != end || v == 0 || v > 65535)
		return -EINVAL;
	memcpy(host, h, (size_t)(he - h));
	host[he - h] = '\0';
	*port = (uint16_t)v;
	return 0;
}

const char *coh_strerror(int status)
{
	switch (status) {
	case 0:
		return "success";
	case -EACCES:
		return "remote access violation";
	case -ECONNRESET:
		return "peer down or operation flushed";
	case -EMSGSIZE:
		return "receive buffer too small";
	case -EPROTO:
		return "malformed message from peer";
	case -ETIMEDOUT:
		return "timed out";
	case -EAGAIN:
		/* The fabric's full queue, and the engine's "not now" (a view change or formation
		 * under way, a lock being moved): both mean the same to a caller. */
		return "temporarily unavailable, try again";
	case -EBUSY:
		return "busy";
	case -EINVAL:
		return "invalid argument";
	default:
		return status < 0 ? strerror(-status) : "unknown status";
	}
}
