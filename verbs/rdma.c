/*
 * rdma.c - the "rdma" fabric provider over libibverbs and librdmacm: opening and closing a node's
 * fabric, device capabilities and locality, memory regions, completion queues, and the ops table.
 *
 * A fabric listens with rdma_cm on its own entry of the cluster list; the RDMA device is the one
 * that address is on, so the listener's verbs context gives the device, and one protection
 * domain serves every region and queue pair of the fabric. Connections and the CM thread live in
 * rdma_cm.c, the data path in rdma_io.c; docs/rdma.md states the guarantees.
 *
 * Persistent regions (coh_mr_new_pmem) register part of a libpmem2 mapping (pmem.c) of a file or
 * a device DAX. A FLUSH to them places data in the target's memory system, which is power-fail
 * safe only where the CPU caches are (eADR); rdma_mr_new_pmem says so in the region's mode.
 *
 * What this provider deliberately does not do: the persistent flush type (IBV_FLUSH_PERSISTENT,
 * which would make ADR-only persistent memory power-fail safe too), on-demand paging (which
 * would let files on a DAX file system be registered), shared receive queues, memory windows,
 * or more than one device per fabric.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifdef COHORT_HAVE_HWLOC
#include <hwloc.h>
#include <hwloc/glibc-sched.h>
#include <hwloc/openfabrics-verbs.h>
#endif

#include "rdma_internal.h"

/* rdma_wake - wake the CM thread so that it looks at kicks and timers again. */
void rdma_wake(struct rdma_fabric *fab)
{
	uint64_t one = 1;

	if (write(fab->wake_fd, &one, sizeof(one)) < 0)
		COH_LOG_WARN("node %u: eventfd write: %s", fab->base.node_id, strerror(errno));
}

/* rdma_send_ops - the send operations every queue pair of @fab is created with. */
uint64_t rdma_send_ops(const struct rdma_fabric *fab)
{
	uint64_t ops = IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_READ | IBV_QP_EX_WITH_SEND |
		       IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP | IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD;

#ifdef COHORT_HAVE_IBV_FLUSH
	if (fab->native_flush)
		ops |= IBV_QP_EX_WITH_FLUSH;
#else
	(void)fab;
#endif
	return ops;
}

/* rdma_addr - resolve "host" and @port into @ss. Returns 0 or -EINVAL. */
static int rdma_addr(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	char serv[8];
	int ret;

	snprintf(serv, sizeof(serv), "%u", port);
	ret = getaddrinfo(host, serv, &hints, &res);
	if (ret) {
		COH_LOG_ERR("cannot resolve '%s': %s", host, gai_strerror(ret));
		return -EINVAL;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

/* rdma_peer_addr - node @node's listening address from the cluster list. */
int rdma_peer_addr(struct rdma_fabric *fab, uint32_t node, struct sockaddr_storage *ss)
{
	char host[256];
	uint16_t port;

	if (cluster_addr_parse(fab->cluster, node, host, sizeof(host), &port)) {
		COH_LOG_ERR("node %u: the cluster list has no valid entry for node %u",
			    fab->base.node_id, node);
		return -EINVAL;
	}
	return rdma_addr(host, port, ss);
}

/* rdma_device_caps - read the device's limits and whether it can FLUSH natively. */
static int rdma_device_caps(struct rdma_fabric *fab)
{
	struct ibv_device_attr_ex dx;
	int ret;

	memset(&dx, 0, sizeof(dx));
	ret = ibv_query_device_ex(fab->verbs, NULL, &dx);
	if (ret)
		return ret > 0 ? -ret : -EIO;
	fab->max_cqe = (uint32_t)dx.orig_attr.max_cqe;
	fab->max_qp_wr = (uint32_t)dx.orig_attr.max_qp_wr;
	fab->rd_atom =
	    (uint8_t)(dx.orig_attr.max_qp_rd_atom < RDMA_RD_ATOM ? dx.orig_attr.max_qp_rd_atom
								 : RDMA_RD_ATOM);
	fab->init_rd_atom = (uint8_t)(dx.orig_attr.max_qp_init_rd_atom < RDMA_RD_ATOM
					  ? dx.orig_attr.max_qp_init_rd_atom
					  : RDMA_RD_ATOM);
	if (dx.orig_attr.atomic_cap == IBV_ATOMIC_NONE)
		COH_LOG_WARN("node %u: device %s has no atomics; CAS and FAA will fail",
			     fab->base.node_id, fab->device);
#ifdef COHORT_HAVE_IBV_FLUSH
	/* rdma-core >= 45 and a device (rxe since Linux 6.2) that places data globally on FLUSH. */
	fab->native_flush = !!(dx.device_cap_flags_ex & IB_UVERBS_DEVICE_FLUSH_GLOBAL);
#endif
	return 0;
}

/* rdma_probe_qp - create and destroy a queue pair to learn the inline size the device grants
 * (and that it accepts the flush send operation). */
static int rdma_probe_qp(struct rdma_fabric *fab)
{
	static const uint32_t wants[] = { RDMA_WANT_INLINE, 64, 0 };
	struct ibv_qp_init_attr_ex qa;
	struct ibv_cq *cq;
	struct ibv_qp *qp = NULL;
	size_t i;

	cq = ibv_create_cq(fab->verbs, 2, NULL, NULL, 0);
	if (!cq)
		return -errno;
	for (i = 0; i < sizeof(wants) / sizeof(wants[0]) * 2 && !qp; i++) {
		/* Second round: without the flush operation, which the device may refuse. */
		if (i == sizeof(wants) / sizeof(wants[0]))
			fab->native_flush = false;
		memset(&qa, 0, sizeof(qa));
		qa.send_cq = cq;
		qa.recv_cq = cq;
		qa.cap.max_send_wr = 1;
		qa.cap.max_recv_wr = 1;
		qa.cap.max_send_sge = 1;
		qa.cap.max_recv_sge = 1;
		qa.cap.max_inline_data = wants[i % (sizeof(wants) / sizeof(wants[0]))];
		qa.qp_type = IBV_QPT_RC;
		qa.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
		qa.pd = fab->pd;
		qa.send_ops_flags = rdma_send_ops(fab);
		qp = ibv_create_qp_ex(fab->verbs, &qa);
	}
	if (qp) {
		fab->max_inline = qa.cap.max_inline_data;
		ibv_destroy_qp(qp);
	}
	ibv_destroy_cq(cq);
	return qp ? 0 : -EOPNOTSUPP;
}

/* rdma_locality - find the device's NUMA node and the CPUs near it (hwloc). Sets @bind when
 * the CM thread should be pinned to @cpus. */
static void rdma_locality(struct rdma_fabric *fab, cpu_set_t *cpus, bool *bind)
{
	*bind = false;
	fab->numa_node = -1;
	CPU_ZERO(cpus);
#ifdef COHORT_HAVE_HWLOC
	hwloc_topology_t topo;
	hwloc_bitmap_t set, nodes;
	hwloc_obj_t osdev, anc;
	char buf[128];

	if (hwloc_topology_init(&topo))
		return;
	hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
	if (hwloc_topology_load(topo))
		goto out_destroy;
	set = hwloc_bitmap_alloc();
	nodes = hwloc_bitmap_alloc();
	if (!set || !nodes)
		goto out_free;
	osdev = hwloc_ibv_get_device_osdev(topo, fab->verbs->device);
	anc = osdev ? hwloc_get_non_io_ancestor_obj(topo, osdev) : NULL;
	if (anc && anc->cpuset)
		hwloc_bitmap_copy(set, anc->cpuset);
	else if (hwloc_ibv_get_device_cpuset(topo, fab->verbs->device, set))
		hwloc_bitmap_copy(set, hwloc_topology_get_complete_cpuset(topo));
	hwloc_cpuset_to_nodeset(topo, set, nodes);
	/* A software device (rxe) has no locality of its own; on a one-node machine the answer
	 * is still exact. */
	if (hwloc_bitmap_weight(nodes) == 1)
		fab->numa_node = hwloc_bitmap_first(nodes);
	if (!hwloc_bitmap_isincluded(hwloc_topology_get_complete_cpuset(topo), set)) {
		hwloc_cpuset_to_glibc_sched_affinity(topo, set, cpus, sizeof(*cpus));
		*bind = true;
	}
	hwloc_bitmap_list_snprintf(buf, sizeof(buf), set);
	COH_LOG_INFO("node %u: device %s is on NUMA node %d (cpus %s)%s", fab->base.node_id,
		     fab->device, fab->numa_node, buf, *bind ? "; CM thread bound there" : "");
out_free:
	hwloc_bitmap_free(nodes);
	hwloc_bitmap_free(set);
out_destroy:
	hwloc_topology_destroy(topo);
#else
	COH_LOG_INFO("node %u: built without hwloc; NUMA node of %s unknown", fab->base.node_id,
		     fab->device);
#endif
}

/* rdma_start_thread - start the CM thread, bound near the device when its locality is known. */
static int rdma_start_thread(struct rdma_fabric *fab)
{
	pthread_attr_t attr;
	cpu_set_t cpus;
	bool bind;
	int ret;

	rdma_locality(fab, &cpus, &bind);
	ret = pthread_attr_init(&attr);
	if (ret)
		return -ret;
	if (bind && pthread_attr_setaffinity_np(&attr, sizeof(cpus), &cpus))
		COH_LOG_WARN("node %u: cannot bind the CM thread", fab->base.node_id);
	ret = pthread_create(&fab->cm_thread, &attr, rdma_cm_main, fab);
	pthread_attr_destroy(&attr);
	if (ret)
		return -ret;
	fab->cm_started = true;
	return 0;
}

/* rdma_listen_on - create the event channel and a listener bound to @host:@port. */
static int rdma_listen_on(struct rdma_fabric *fab, const char *host, uint16_t port)
{
	uint32_t me = fab->base.node_id;
	int ret;

	ret = rdma_addr(host, port, &fab->addr);
	if (ret)
		return ret;
	fab->ech = rdma_create_event_channel();
	if (!fab->ech)
		return -errno;
	ret = fcntl(fab->ech->fd, F_SETFL, fcntl(fab->ech->fd, F_GETFL) | O_NONBLOCK);
	if (ret < 0 || rdma_create_id(fab->ech, &fab->listen_id, NULL, RDMA_PS_TCP)) {
		ret = -errno;
		goto err_destroy_channel;
	}
	if (rdma_bind_addr(fab->listen_id, (struct sockaddr *)&fab->addr)) {
		ret = -errno;
		if (ret == -EADDRINUSE)
			COH_LOG_ERR("node %u: %s:%u is in use: is another process node %u?", me,
				    host, port, me);
		else
			COH_LOG_ERR("node %u: cannot bind %s:%u: %s", me, host, port,
				    strerror(-ret));
		goto err_destroy_id;
	}
	if (!fab->listen_id->verbs) {
		COH_LOG_ERR("node %u: %s is not the address of an RDMA device (see "
			    "scripts/rxe-setup.sh for soft-RoCE)",
			    me, host);
		ret = -ENODEV;
		goto err_destroy_id;
	}
	if (rdma_listen(fab->listen_id, 64)) {
		ret = -errno;
		goto err_destroy_id;
	}
	return 0;

err_destroy_id:
	rdma_destroy_id(fab->listen_id);
err_destroy_channel:
	rdma_destroy_event_channel(fab->ech);
	return ret;
}

/* rdma_sync_init - the fabric's mutex and its condition variable on the monotonic clock. */
static int rdma_sync_init(struct rdma_fabric *fab)
{
	pthread_condattr_t ca;
	int ret;

	ret = pthread_mutex_init(&fab->lock, NULL);
	if (ret)
		return -ret;
	ret = pthread_condattr_init(&ca);
	if (ret)
		goto err_destroy_mutex;
	ret = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!ret)
		ret = pthread_cond_init(&fab->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (ret)
		goto err_destroy_mutex;
	return 0;

err_destroy_mutex:
	pthread_mutex_destroy(&fab->lock);
	return -ret;
}

/* rdma_fabric_open - open node attr->node_id's fabric; see struct coh_fabric_ops. */
static int rdma_fabric_open(const struct coh_fabric_attr *attr, struct coh_fabric **fabp)
{
	struct rdma_fabric *fab;
	struct timespec now;
	char host[256];
	uint16_t port;
	int ret;

	ret = cluster_addr_parse(attr->cluster, attr->node_id, host, sizeof(host), &port);
	if (ret) {
		COH_LOG_ERR("node %u: no valid entry for this node in cluster list '%s'",
			    attr->node_id, attr->cluster);
		return -EINVAL;
	}
	fab = calloc(1, sizeof(*fab));
	if (!fab)
		return -ENOMEM;
	ret = fabric_base_init(&fab->base, &rdma_ops, attr);
	if (ret)
		goto err_free;
	fab->cluster = strdup(attr->cluster);
	if (!fab->cluster) {
		ret = -ENOMEM;
		goto err_base_fini;
	}
	ret = rdma_sync_init(fab);
	if (ret)
		goto err_free_cluster;
	fab->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fab->wake_fd < 0) {
		ret = -errno;
		goto err_sync_fini;
	}
	ret = rdma_listen_on(fab, host, port);
	if (ret)
		goto err_close_wake;
	fab->verbs = fab->listen_id->verbs;
	snprintf(fab->device, sizeof(fab->device), "%s", ibv_get_device_name(fab->verbs->device));
	ret = rdma_device_caps(fab);
	if (ret)
		goto err_destroy_listener;
	fab->pd = ibv_alloc_pd(fab->verbs);
	if (!fab->pd) {
		ret = -errno;
		goto err_destroy_listener;
	}
	ret = rdma_probe_qp(fab);
	if (ret) {
		COH_LOG_ERR("node %u: %s cannot create an RC queue pair with the extended API",
			    attr->node_id, fab->device);
		goto err_dealloc_pd;
	}
	fab->sink_mr = ibv_reg_mr(fab->pd, fab->sink, sizeof(fab->sink), IBV_ACCESS_LOCAL_WRITE);
	if (!fab->sink_mr) {
		ret = -errno;
		goto err_dealloc_pd;
	}
	/* Wall-clock nanoseconds: a restarted node gets a larger incarnation than its last. */
	clock_gettime(CLOCK_REALTIME, &now);
	fab->incarnation = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
	atomic_init(&fab->stop, false);
	atomic_init(&fab->next_region, 0);
	atomic_init(&fab->next_pmem, 0);
	ret = rdma_start_thread(fab);
	if (ret)
		goto err_dereg_sink;
	COH_LOG_INFO("node %u: rdma fabric on %s at %s:%u, incarnation %#" PRIx64
		     ", flush %s, max inline %u",
		     attr->node_id, fab->device, host, port, fab->incarnation,
		     fab->native_flush ? "native" : "emulated by READ", fab->max_inline);
	*fabp = &fab->base;
	return 0;

err_dereg_sink:
	ibv_dereg_mr(fab->sink_mr);
err_dealloc_pd:
	ibv_dealloc_pd(fab->pd);
err_destroy_listener:
	rdma_destroy_id(fab->listen_id);
	rdma_destroy_event_channel(fab->ech);
err_close_wake:
	close(fab->wake_fd);
err_sync_fini:
	pthread_cond_destroy(&fab->cond);
	pthread_mutex_destroy(&fab->lock);
err_free_cluster:
	free(fab->cluster);
err_base_fini:
	fabric_base_fini(&fab->base);
err_free:
	free(fab);
	return ret;
}

/* rdma_stop_thread - stop the CM thread, waiting at most 2 s. Returns 0 or -ETIMEDOUT. */
static int rdma_stop_thread(struct rdma_fabric *fab)
{
	struct timespec abs;
	int ret;

	if (!fab->cm_started)
		return 0;
	atomic_store(&fab->stop, true);
	rdma_wake(fab);
	clock_gettime(CLOCK_REALTIME, &abs);
	abs.tv_sec += 2;
	ret = pthread_timedjoin_np(fab->cm_thread, NULL, &abs);
	if (ret) {
		COH_LOG_ERR("node %u: the CM thread does not stop: %s", fab->base.node_id,
			    strerror(ret));
		return -ETIMEDOUT;
	}
	return 0;
}

/* rdma_fabric_close - say goodbye, stop the CM thread and free everything in reverse order. */
static int rdma_fabric_close(struct coh_fabric *bfab)
{
	struct rdma_fabric *fab = container_of(bfab, struct rdma_fabric, base);
	int ret = 0;

	rdma_cm_goodbye(fab);
	if (rdma_stop_thread(fab)) {
		/* The thread may still use the fabric: leaking it is the only safe choice. */
		return -ETIMEDOUT;
	}
	rdma_cm_release(fab);
	rdma_destroy_id(fab->listen_id);
	if (ibv_dereg_mr(fab->sink_mr))
		ret = -EBUSY;
	if (ibv_dealloc_pd(fab->pd)) {
		COH_LOG_ERR("node %u: protection domain still in use", bfab->node_id);
		ret = -EBUSY;
	}
	rdma_destroy_event_channel(fab->ech);
	close(fab->wake_fd);
	pthread_cond_destroy(&fab->cond);
	pthread_mutex_destroy(&fab->lock);
	free(fab->cluster);
	fabric_base_fini(&fab->base);
	free(fab);
	return ret;
}

/* rdma_fabric_query - fill @info. */
static void rdma_fabric_query(const struct coh_fabric *bfab, struct coh_fabric_info *info)
{
	const struct rdma_fabric *fab = container_of(bfab, const struct rdma_fabric, base);

	info->provider = "rdma";
	info->node_id = bfab->node_id;
	info->native_flush = fab->native_flush;
	info->persistent = false;
	info->max_msg_size = RDMA_MAX_MSG;
	info->max_inline = fab->max_inline;
	info->numa_node = fab->numa_node;
	snprintf(info->device, sizeof(info->device), "%s", fab->device);
}

/* Memory regions. */

/* rdma_access - the narrowest verbs rights for Cohort rights @access. */
static int rdma_access(const struct rdma_fabric *fab, uint32_t access)
{
	int a = 0;

	/* Remote writes and atomics modify local memory, which verbs require to be declared. */
	if (access & (COH_ACCESS_LOCAL_WRITE | COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_ATOMIC))
		a |= IBV_ACCESS_LOCAL_WRITE;
	if (access & COH_ACCESS_REMOTE_READ)
		a |= IBV_ACCESS_REMOTE_READ;
	if (access & COH_ACCESS_REMOTE_WRITE)
		a |= IBV_ACCESS_REMOTE_WRITE;
	if (access & COH_ACCESS_REMOTE_ATOMIC)
		a |= IBV_ACCESS_REMOTE_ATOMIC;
	if (access & COH_ACCESS_REMOTE_FLUSH) {
#ifdef COHORT_HAVE_IBV_FLUSH
		if (fab->native_flush)
			a |= IBV_ACCESS_FLUSH_GLOBAL;
		else
			a |= IBV_ACCESS_REMOTE_READ;
#else
		/* The emulated flush is a READ of the flushed range. */
		(void)fab;
		a |= IBV_ACCESS_REMOTE_READ;
#endif
	}
	return a;
}

/* rdma_mr_register - register @addr..+@len and wrap it in a new rdma_mr. */
static int rdma_mr_register(struct rdma_fabric *fab, void *addr, size_t len, uint32_t access,
			    struct rdma_mr **mrp)
{
	struct rdma_mr *mr = calloc(1, sizeof(*mr));
	int ret;

	if (!mr)
		return -ENOMEM;
	mr->mr = ibv_reg_mr(fab->pd, addr, len, rdma_access(fab, access));
	if (!mr->mr) {
		ret = errno ? -errno : -ENOMEM;
		COH_LOG_ERR("node %u: ibv_reg_mr(%zu bytes): %s", fab->base.node_id, len,
			    strerror(-ret));
		free(mr);
		return ret;
	}
	mr->base.fab = &fab->base;
	mr->base.addr = addr;
	mr->base.len = len;
	mr->base.access = access;
	mr->base.region = atomic_fetch_add(&fab->next_region, 1) + 1;
	mr->base.rkey = mr->mr->rkey;
	mr->base.remote_addr = (uintptr_t)addr;
	mr->base.incarnation = fab->incarnation;
	*mrp = mr;
	return 0;
}

/* rdma_mr_new - allocate zeroed, page-aligned memory and register it. */
static int rdma_mr_new(struct coh_fabric *bfab, size_t len, uint32_t access, struct coh_mr **mrp)
{
	struct rdma_fabric *fab = container_of(bfab, struct rdma_fabric, base);
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t map_len = (len + page - 1) / page * page;
	struct rdma_mr *mr;
	void *addr;
	int ret;

	/* Anonymous mappings are zeroed and page-aligned. */
	addr = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (addr == MAP_FAILED)
		return -ENOMEM;
	ret = rdma_mr_register(fab, addr, len, access, &mr);
	if (ret)
		goto err_unmap;
	mr->owned = true;
	mr->map_len = map_len;
	*mrp = &mr->base;
	return 0;

err_unmap:
	munmap(addr, map_len);
	return ret;
}

/* rdma_mr_reg - register caller memory. */
static int rdma_mr_reg(struct coh_fabric *bfab, void *buf, size_t len, uint32_t access,
		       struct coh_mr **mrp)
{
	struct rdma_fabric *fab = container_of(bfab, struct rdma_fabric, base);
	struct rdma_mr *mr;
	int ret;

	ret = rdma_mr_register(fab, buf, len, access, &mr);
	if (ret)
		return ret;
	*mrp = &mr->base;
	return 0;
}

/*
 * rdma_mr_new_pmem - map @path (NULL: a new file in $COHORT_PMEM_DIR, or /dev/shm) with libpmem2
 * and register the region's part of it, after the header page.
 *
 * The region's mode is what a FLUSH from a peer can promise. That FLUSH (native GLOBAL, or the
 * READ that emulates it) completes once the WRITEs before it have been placed in the target's
 * memory system, which with DDIO is the CPU's last-level cache; no CPU on the target writes the
 * cache back, and nothing msyncs a page-cache file. So the bytes survive power loss only where
 * the CPU caches are in the persistence domain (eADR: libpmem2's byte granularity); anywhere else
 * they sit in the file's pages or in DAX memory, which outlive any process but are not promised
 * to outlive the host.
 */
static int rdma_mr_new_pmem(struct coh_fabric *bfab, const char *path, size_t len, uint32_t access,
			    struct coh_mr **mrp)
{
	struct rdma_fabric *fab = container_of(bfab, struct rdma_fabric, base);
	char *owned = NULL;
	struct pmem_map pm;
	struct rdma_mr *mr;
	const char *dir;
	int ret;

	if (!path) {
		dir = getenv("COHORT_PMEM_DIR");
		if (!dir || !dir[0])
			dir = "/dev/shm";
		if (asprintf(&owned, "%s/cohort-%u-%" PRIx64 "-%u.pmem", dir, bfab->node_id,
			     fab->incarnation, atomic_fetch_add(&fab->next_pmem, 1) + 1) < 0)
			return -ENOMEM;
		path = owned;
	}
	ret = pmem_map_open(AT_FDCWD, path, PMEM_HDR_LEN + len, PMEM_MAP_CREATE, &pm);
	if (ret)
		goto err_free_path;
	ret = rdma_mr_register(fab, (uint8_t *)pm.addr + PMEM_HDR_LEN, len, access, &mr);
	if (ret == -EOPNOTSUPP || ret == -EFAULT)
		COH_LOG_ERR("node %u: cannot register %s: the kernel pins device DAX, tmpfs and "
			    "hugetlbfs mappings for RDMA, not files on a DAX file system nor, on "
			    "recent kernels, page-cache files of a disk file system",
			    bfab->node_id, path);
	if (ret)
		goto err_close_pmem;
	mr->pmem = true;
	mr->pm = pm;
	mr->unlink_path = owned;
	mr->base.persist = pm.eadr ? COH_PERSIST_PMEM : COH_PERSIST_FILE;
	if (pm.persist == COH_PERSIST_PMEM && !pm.eadr)
		COH_LOG_INFO("node %u: %s is persistent memory without eADR: a FLUSH may leave "
			     "data in the CPU cache, so the region is COH_PERSIST_FILE",
			     bfab->node_id, path);
	*mrp = &mr->base;
	return 0;

err_close_pmem:
	pmem_map_close(&pm);
	/* A file this call created holds nothing; one that existed keeps its data. */
	if (pm.created)
		unlink(path);
err_free_path:
	free(owned);
	return ret;
}

/* rdma_mr_delete - deregister and free; the region is freed even if deregistration fails. A
 * persistent region's file stays, unless the provider named it. */
static int rdma_mr_delete(struct coh_mr *bmr)
{
	struct rdma_mr *mr = container_of(bmr, struct rdma_mr, base);
	int ret, ret2 = 0;

	ret = ibv_dereg_mr(mr->mr);
	if (ret)
		COH_LOG_ERR("node %u: ibv_dereg_mr: %s", bmr->fab->node_id, strerror(ret));
	if (mr->owned)
		munmap(bmr->addr, mr->map_len);
	if (mr->pmem) {
		ret2 = pmem_map_close(&mr->pm);
		if (mr->unlink_path && unlink(mr->unlink_path) < 0 && !ret2)
			ret2 = -errno;
		free(mr->unlink_path);
	}
	free(mr);
	return ret ? -ret : ret2;
}

/* rdma_mr_rekey - register the memory again and drop the old registration, so its rkey dies. */
static int rdma_mr_rekey(struct coh_mr *bmr)
{
	struct rdma_mr *mr = container_of(bmr, struct rdma_mr, base);
	struct rdma_fabric *fab = container_of(bmr->fab, struct rdma_fabric, base);
	struct ibv_mr *old = mr->mr, *fresh;
	int ret;

	/* Register before deregistering: the memory never loses its registration, and the two
	 * live registrations cannot share a key. (ibv_rereg_mr may keep the key on some
	 * devices and is not implemented by rxe.) */
	fresh = ibv_reg_mr(fab->pd, bmr->addr, bmr->len, rdma_access(fab, bmr->access));
	if (!fresh)
		return errno ? -errno : -ENOMEM;
	mr->mr = fresh;
	bmr->rkey = fresh->rkey;
	ret = ibv_dereg_mr(old);
	if (ret) {
		COH_LOG_ERR("node %u: old key %#x of region %u could not be revoked: %s",
			    bmr->fab->node_id, old->rkey, bmr->region, strerror(ret));
		return -ret;
	}
	return 0;
}

/* rdma_mr_persist - persist the owner's own stores to a persistent region. */
static int rdma_mr_persist(struct coh_mr *bmr, size_t off, size_t len)
{
	struct rdma_mr *mr = container_of(bmr, struct rdma_mr, base);

	return mr->pmem ? pmem_persist(&mr->pm, (uint8_t *)bmr->addr + off, len) : 0;
}

/* Completion queues. */

/* rdma_cq_new - a verbs CQ with its completion channel, plus the software list. */
static int rdma_cq_new(struct coh_fabric *bfab, uint32_t depth, struct coh_cq **cqp)
{
	struct rdma_fabric *fab = container_of(bfab, struct rdma_fabric, base);
	uint32_t hw = depth < fab->max_cqe ? depth : fab->max_cqe;
	struct rdma_cq *cq;
	int ret;

	cq = calloc(1, sizeof(*cq));
	if (!cq)
		return -ENOMEM;
	cq->fab = fab;
	cq->sw_cap = 64;
	cq->sw = calloc(cq->sw_cap, sizeof(*cq->sw));
	if (!cq->sw) {
		ret = -ENOMEM;
		goto err_free_cq;
	}
	ret = pthread_mutex_init(&cq->sw_lock, NULL);
	if (ret) {
		ret = -ret;
		goto err_free_sw;
	}
	cq->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (cq->wake_fd < 0) {
		ret = -errno;
		goto err_destroy_lock;
	}
	cq->ch = ibv_create_comp_channel(fab->verbs);
	if (!cq->ch) {
		ret = -errno;
		goto err_close_wake;
	}
	if (fcntl(cq->ch->fd, F_SETFL, fcntl(cq->ch->fd, F_GETFL) | O_NONBLOCK) < 0) {
		ret = -errno;
		goto err_destroy_channel;
	}
	cq->cq = ibv_create_cq(fab->verbs, (int)hw, cq, cq->ch, 0);
	if (!cq->cq) {
		ret = errno ? -errno : -ENOMEM;
		goto err_destroy_channel;
	}
	/* The device may round up; endpoints are admitted against what it granted. */
	cq->hw_depth = (uint32_t)cq->cq->cqe;
	if (cq->hw_depth < depth)
		COH_LOG_WARN("node %u: %s holds %u completions per queue, not %u", bfab->node_id,
			     fab->device, cq->hw_depth, depth);
	atomic_init(&cq->sw_pending, 0);
	*cqp = &cq->base;
	return 0;

err_destroy_channel:
	ibv_destroy_comp_channel(cq->ch);
err_close_wake:
	close(cq->wake_fd);
err_destroy_lock:
	pthread_mutex_destroy(&cq->sw_lock);
err_free_sw:
	free(cq->sw);
err_free_cq:
	free(cq);
	return ret;
}

/* rdma_cq_delete - destroy the verbs objects and free the queue. */
static int rdma_cq_delete(struct coh_cq *bcq)
{
	struct rdma_cq *cq = container_of(bcq, struct rdma_cq, base);
	int ret, ret2;

	ret = ibv_destroy_cq(cq->cq);
	if (ret)
		COH_LOG_ERR("node %u: ibv_destroy_cq: %s", bcq->fab->node_id, strerror(ret));
	ret2 = ibv_destroy_comp_channel(cq->ch);
	close(cq->wake_fd);
	pthread_mutex_destroy(&cq->sw_lock);
	free(cq->sw);
	free(cq);
	return ret ? -ret : ret2 ? -ret2 : 0;
}

/* Remote regions. */

/* rdma_rmr_import - keep the decoded descriptor; it must belong to the peer's current life. */
static int rdma_rmr_import(struct coh_ep *bep, const struct coh_mr_fields *f, struct coh_rmr **rmrp)
{
	struct rdma_ep *ep = container_of(bep, struct rdma_ep, base);
	struct rdma_rmr *rmr;

	if (f->incarnation != ep->peer_inc)
		return -EACCES;
	if (!f->len || f->addr + f->len < f->addr)
		return -EPROTO;
	rmr = calloc(1, sizeof(*rmr));
	if (!rmr)
		return -ENOMEM;
	rmr->base.ep = bep;
	rmr->base.f = *f;
	*rmrp = &rmr->base;
	return 0;
}

/* rdma_rmr_delete - forget a remote region. */
static int rdma_rmr_delete(struct coh_rmr *brmr)
{
	free(container_of(brmr, struct rdma_rmr, base));
	return 0;
}

const struct coh_fabric_ops rdma_ops = {
	.name = "rdma",
	.id = COH_PROVIDER_RDMA,
	.fabric_open = rdma_fabric_open,
	.fabric_close = rdma_fabric_close,
	.fabric_query = rdma_fabric_query,
	.mr_new = rdma_mr_new,
	.mr_reg = rdma_mr_reg,
	.mr_new_pmem = rdma_mr_new_pmem,
	.mr_delete = rdma_mr_delete,
	.mr_rekey = rdma_mr_rekey,
	.mr_persist = rdma_mr_persist,
	.cq_new = rdma_cq_new,
	.cq_delete = rdma_cq_delete,
	.cq_poll = rdma_cq_poll,
	.cq_sleep = rdma_cq_sleep,
	.cq_wake = rdma_cq_wake,
	.ep_new = rdma_ep_new,
	.ep_new_many = rdma_ep_new_many,
	.ep_delete = rdma_ep_delete,
	.ep_is_up = rdma_ep_is_up,
	.ep_peer_inc = rdma_ep_peer_inc,
	.rmr_import = rdma_rmr_import,
	.rmr_delete = rdma_rmr_delete,
	.post = rdma_post,
	.post_recv = rdma_post_recv,
};
