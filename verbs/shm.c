/*
 * shm.c - the shm provider's node side: joining a cluster directory, liveness and completion
 * queues. Regions are in shm_mr.c, endpoints and operations in shm_ep.c.
 *
 * Liveness rests on what the kernel does when a process dies, even by SIGKILL: it drops the
 * process's file locks and makes its pidfd readable. Each incarnation of a node holds an OFD write
 * lock on its lock file. One monitor thread per fabric sleeps in poll() on its peers' pidfds, so a
 * death is seen the moment it happens, and confirms it (and catches clean departures) with the
 * lock probe. Waiting uses one futex doorbell per node in its ctl page, rung by whoever makes
 * progress possible (a sender, a consumer of a full ring, the monitor).
 *
 * Persistence: regions live in files in the cluster directory. On tmpfs (/dev/shm) a flushed
 * write survives the writer's crash and the target's, not the host's; on a real file system the
 * flush also msyncs, so it survives what that file system survives. Persistent regions
 * (shm_mr.c) may live elsewhere and are always persisted at FLUSH. This provider is for tests
 * and single-host demos; it trusts the kernel's file permissions (0700 directory), not its peers'
 * good behaviour, so everything read from a peer's file is checked before it is used.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "shm_internal.h"

/* Doorbells. */

/* shm_doorbell_ring - wake every thread sleeping on @ctl's doorbell. */
void shm_doorbell_ring(struct shm_ctl *ctl)
{
	/* seq_cst on both sides (here and in shm_doorbell_sleep) orders the bump before the
	 * waiter check, so a sleeper either sees the new value or is seen and woken. */
	atomic_fetch_add(&ctl->doorbell, 1);
	if (atomic_load(&ctl->waiters))
		syscall(SYS_futex, &ctl->doorbell, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* shm_doorbell_sleep - sleep while the doorbell still reads @seen, at most @timeout_ms. The
 * caller read @seen, registered in waiters, and re-checked its condition before calling. */
int shm_doorbell_sleep(struct shm_ctl *ctl, uint32_t seen, int timeout_ms)
{
	struct timespec ts = { .tv_sec = timeout_ms / 1000,
			       .tv_nsec = (long)(timeout_ms % 1000) * 1000000L };

	if (syscall(SYS_futex, &ctl->doorbell, FUTEX_WAIT, seen, &ts, NULL, 0) < 0 &&
	    errno == ETIMEDOUT)
		return -ETIMEDOUT;
	return 0;
}

/* sleep_ms - a bounded pause for control-path polling of a peer that has not appeared yet. */
static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

uint32_t shm_random32(void)
{
	uint32_t v = 0;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
		v = (uint32_t)verbs_now_ns() * 2654435761u;
	return v;
}

/* Files. */

/*
 * shm_file_map - open (or with @create, create) @name in the cluster directory, size it to @len
 * when creating, and map it shared. The file must be exactly @len bytes, so that a truncated or
 * foreign file is refused rather than faulting later. Returns 0, -ENOENT, -EPROTO (wrong size)
 * or a system call's errno.
 */
int shm_file_map(int dir_fd, const char *name, size_t len, bool create, int prot, void **mapp,
		 bool *created)
{
	int flags = (prot & PROT_WRITE) ? O_RDWR : O_RDONLY;
	struct stat st;
	void *map;
	int fd, ret;

	if (created)
		*created = false;
	fd = openat(dir_fd, name, flags | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	if (fd < 0)
		return -errno;
	/* Serialise creation against a peer opening the same file. */
	if (flock(fd, LOCK_EX) < 0) {
		ret = -errno;
		goto err_close;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto err_close;
	}
	if (create && st.st_size == 0) {
		if (ftruncate(fd, (off_t)len) < 0) {
			ret = -errno;
			goto err_close;
		}
		if (created)
			*created = true;
	} else if ((size_t)st.st_size != len) {
		ret = -EPROTO;
		goto err_close;
	}
	/* Populated up front, as an RDMA registration pins and faults its pages: the first
	 * operation on a region must not pay for page faults. A writable mapping is populated
	 * for write, as ibv_reg_mr does: MAP_POPULATE alone maps a shared page clean, and the
	 * first store to each page then pays for setting its dirty bit (about 0.35 us per page
	 * in a VM, measured), which a cold cache slot would pay on every peer fetch. */
	map = mmap(NULL, len, prot, MAP_SHARED | (prot & PROT_WRITE ? 0 : MAP_POPULATE), fd, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		goto err_close;
	}
	if ((prot & PROT_WRITE) && madvise(map, len, MADV_POPULATE_WRITE) < 0) {
		if (errno != EINVAL) {
			ret = -errno;
			munmap(map, len);
			goto err_close;
		}
		/* A kernel before 5.14: populate as MAP_POPULATE would. */
		for (size_t off = 0; off < len; off += SHM_PAGE)
			(void)*(volatile const uint8_t *)((const uint8_t *)map + off);
	}
	/* Unlock explicitly: the mapping holds the open file description, so close() alone would
	 * keep the flock for as long as the mapping lives. */
	flock(fd, LOCK_UN);
	close(fd);
	*mapp = map;
	return 0;

err_close:
	close(fd);
	return ret;
}

static int lock_range(int fd, int cmd, short type, off_t start, struct flock *out)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = 1 };
	int ret;

	do {
		ret = fcntl(fd, cmd, &fl);
	} while (ret < 0 && errno == EINTR && cmd != F_OFD_SETLKW);
	if (out)
		*out = fl;
	return ret < 0 ? -errno : 0;
}

/* lock_file_alive - true when some process holds the alive byte of the lock file @name. */
static bool lock_file_alive(int dir_fd, const char *name)
{
	struct flock fl;
	bool alive;
	int fd;

	fd = openat(dir_fd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return false;
	alive =
	    !lock_range(fd, F_OFD_GETLK, F_WRLCK, SHM_LOCK_ALIVE_BYTE, &fl) && fl.l_type != F_UNLCK;
	close(fd);
	return alive;
}

/* Peers and the monitor. */

static bool peer_lock_alive(int lock_fd)
{
	struct flock fl;

	return !lock_range(lock_fd, F_OFD_GETLK, F_WRLCK, SHM_LOCK_ALIVE_BYTE, &fl) &&
	       fl.l_type != F_UNLCK;
}

/* mark_down - record that @p's incarnation ended and report it once. sf->lock held. */
static void mark_down(struct shm_fabric *sf, struct shm_peer *p)
{
	uint64_t inc = atomic_exchange(&p->up_inc, 0);

	if (!inc)
		return;
	/* The event first: a thread woken by the doorbell finds the flushed completions, then
	 * looks for the event that explains them. The other way round it could miss the event
	 * and sleep on its queue until its timeout. */
	fabric_peer_down(&sf->base, p->id, inc);
	shm_doorbell_ring(sf->ctl);
}

/*
 * shm_monitor - the fabric's liveness thread. It sleeps in poll() on every monitored peer's
 * pidfd, which becomes readable the moment that process exits (after the kernel has released
 * its locks), and on the fabric's wake-up eventfd. On any wake, and at least every
 * SHM_MONITOR_PERIOD_MS, it confirms each peer with the lock probe, which also catches a peer
 * that closed its fabric without exiting and a peer in another PID namespace (no pidfd).
 */
static void *shm_monitor(void *arg)
{
	struct shm_fabric *sf = arg;
	struct pollfd pfd[COH_FABRIC_MAX_NODES + 1];
	uint64_t drain;
	uint32_t i;
	nfds_t n;

	for (;;) {
		pthread_mutex_lock(&sf->lock);
		if (sf->mon_stop) {
			pthread_mutex_unlock(&sf->lock);
			return NULL;
		}
		for (i = 0; i < COH_FABRIC_MAX_NODES; i++) {
			struct shm_peer *p = &sf->peers[i];

			if (!atomic_load(&p->up_inc))
				continue;
			if (!peer_lock_alive(p->lock_fd) || !atomic_load(&p->ctl->ready) ||
			    atomic_load(&p->ctl->incarnation) != p->incarnation)
				mark_down(sf, p);
		}
		pfd[0].fd = sf->mon_fd;
		pfd[0].events = POLLIN;
		n = 1;
		for (i = 0; i < COH_FABRIC_MAX_NODES; i++) {
			if (atomic_load(&sf->peers[i].up_inc) && sf->peers[i].pidfd >= 0) {
				pfd[n].fd = sf->peers[i].pidfd;
				pfd[n].events = POLLIN;
				n++;
			}
		}
		pthread_mutex_unlock(&sf->lock);
		/* A pidfd closed meanwhile by peer_release is harmless: poll holds its own
		 * reference, and the next pass rebuilds the set under the lock. */
		if (poll(pfd, n, SHM_MONITOR_PERIOD_MS) > 0 && (pfd[0].revents & POLLIN) &&
		    read(sf->mon_fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
			COH_LOG_WARN("node %u: monitor eventfd: %s", sf->base.node_id,
				     strerror(errno));
	}
}

static void monitor_kick(struct shm_fabric *sf)
{
	uint64_t one = 1;

	if (write(sf->mon_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		COH_LOG_WARN("node %u: monitor eventfd: %s", sf->base.node_id, strerror(errno));
}

/* peer_release - forget a peer: close its files and unmap its ctl. sf->lock held, or the
 * monitor stopped. */
static void peer_release(struct shm_peer *pp)
{
	atomic_store(&pp->up_inc, 0);
	if (pp->pidfd >= 0) {
		close(pp->pidfd);
		pp->pidfd = -1;
	}
	if (pp->lock_fd >= 0) {
		close(pp->lock_fd);
		pp->lock_fd = -1;
	}
	if (pp->ctl) {
		munmap(pp->ctl, SHM_PAGE);
		pp->ctl = NULL;
	}
	pp->incarnation = 0;
}

/* peer_probe - if @peer's current incarnation is open and alive, map its ctl and return its
 * incarnation through @incp. Returns 0, or -EAGAIN when it is not (yet) there. */
static int peer_probe(struct shm_fabric *sf, uint32_t peer, struct shm_ctl **ctlp, uint64_t *incp)
{
	char name[64];
	struct shm_ctl *ctl;
	uint64_t inc;
	void *map;
	int ret;

	snprintf(name, sizeof(name), "node-%u.ctl", peer);
	ret = shm_file_map(sf->dir_fd, name, SHM_PAGE, false, PROT_READ | PROT_WRITE, &map, NULL);
	if (ret)
		return ret == -ENOENT || ret == -EPROTO ? -EAGAIN : ret;
	ctl = map;
	inc = atomic_load(&ctl->incarnation);
	if (ctl->magic != SHM_CTL_MAGIC || ctl->version != SHM_VERSION || ctl->node != peer ||
	    !inc || !atomic_load(&ctl->ready))
		goto not_there;
	snprintf(name, sizeof(name), "node-%u-%" PRIu64 ".lock", peer, inc);
	if (!lock_file_alive(sf->dir_fd, name))
		goto not_there;
	*ctlp = ctl;
	*incp = inc;
	return 0;

not_there:
	munmap(map, SHM_PAGE);
	return -EAGAIN;
}

/*
 * shm_peer_attach - make sure @peer is alive and monitored; wait (bounded) for it to appear.
 * Returns 0 with *@pp set, -ETIMEDOUT, or a system call's errno. A peer seen dead before is
 * re-probed, and a new incarnation replaces the old one's monitor.
 */
int shm_peer_attach(struct shm_fabric *sf, uint32_t peer, int timeout_ms, struct shm_peer **pp)
{
	uint64_t deadline = verbs_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	struct shm_peer *p = &sf->peers[peer];
	unsigned int pause = 1;
	struct shm_ctl *ctl;
	char name[64];
	uint64_t inc;
	int ret;

	for (;;) {
		ret = peer_probe(sf, peer, &ctl, &inc);
		if (!ret)
			break;
		if (ret != -EAGAIN)
			return ret;
		if (verbs_now_ns() >= deadline)
			return -ETIMEDOUT;
		/* The peer is not there yet and has no doorbell to wait on: back off, bounded. */
		sleep_ms(pause);
		pause = pause < 16 ? pause * 2 : 16;
	}

	pthread_mutex_lock(&sf->lock);
	if (p->incarnation == inc && p->ctl) {
		/* Already monitored; if it died meanwhile, up_inc says so and the caller fails. */
		pthread_mutex_unlock(&sf->lock);
		munmap(ctl, SHM_PAGE);
		*pp = p;
		return 0;
	}
	/* A new incarnation: the old one is over, whether or not the monitor saw it yet. */
	mark_down(sf, p);
	peer_release(p);
	snprintf(name, sizeof(name), "node-%u-%" PRIu64 ".lock", peer, inc);
	p->lock_fd = openat(sf->dir_fd, name, O_RDWR | O_CLOEXEC);
	if (p->lock_fd < 0) {
		ret = errno == ENOENT ? -ECONNREFUSED : -errno;
		pthread_mutex_unlock(&sf->lock);
		munmap(ctl, SHM_PAGE);
		return ret;
	}
	p->ctl = ctl;
	p->incarnation = inc;
	p->id = peer;
	/* Without a pidfd (another PID namespace, an old kernel) the periodic probe still works. */
	p->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)atomic_load(&ctl->pid), 0);
	atomic_store(&p->up_inc, inc);
	pthread_mutex_unlock(&sf->lock);
	/* The pid was read before the pidfd was made: if it was reused meanwhile, the lock probe
	 * the monitor runs on this wake-up finds the real incarnation dead. */
	monitor_kick(sf);
	*pp = p;
	return 0;
}

/* Fabric. */

/* remove_stale - unlink files left by earlier incarnations of this node. Peers that still map
 * them keep their mappings; new peers can no longer find them. */
static void remove_stale(struct shm_fabric *sf)
{
	uint32_t id = sf->base.node_id, a, b, ch, r;
	uint64_t inc, ia, ib;
	struct dirent *de;
	DIR *d;
	int fd;

	fd = dup(sf->dir_fd);
	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d))) {
		bool stale = false;

		if (sscanf(de->d_name, "mr-%u-%" SCNu64 "-%u", &a, &inc, &r) == 3)
			stale = a == id && inc != sf->incarnation;
		else if (sscanf(de->d_name, "node-%u-%" SCNu64 ".lock", &a, &inc) == 2)
			stale = a == id && inc != sf->incarnation;
		else if (sscanf(de->d_name, "ep-%u.%" SCNu64 "-%u.%" SCNu64 "-%u", &a, &ia, &b, &ib,
				&ch) == 5)
			stale = (a == id && ia != sf->incarnation) ||
				(b == id && ib != sf->incarnation);
		if (stale)
			unlinkat(sf->dir_fd, de->d_name, 0);
	}
	closedir(d);
}

/* join - take this node's identity: a new incarnation, its lock, and the ctl page. */
static int join(struct shm_fabric *sf, uint32_t timeout_ms)
{
	uint64_t deadline = verbs_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	uint32_t id = sf->base.node_id;
	char name[64];
	uint64_t prev;
	int ret;

	snprintf(name, sizeof(name), "node-%u.ctl", id);
	sf->ctl_fd = openat(sf->dir_fd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sf->ctl_fd < 0)
		return -errno;
	/* Two processes opening the same id race here; the flock makes one wait for the other,
	 * and the alive check below then refuses the loser. */
	while (flock(sf->ctl_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK || verbs_now_ns() >= deadline) {
			ret = errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
			goto err_close_ctl;
		}
		sleep_ms(1);
	}
	if (ftruncate(sf->ctl_fd, SHM_PAGE) < 0) {
		ret = -errno;
		goto err_close_ctl;
	}
	sf->ctl = mmap(NULL, SHM_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, sf->ctl_fd, 0);
	if (sf->ctl == MAP_FAILED) {
		ret = -errno;
		sf->ctl = NULL;
		goto err_close_ctl;
	}
	prev = sf->ctl->magic == SHM_CTL_MAGIC ? atomic_load(&sf->ctl->incarnation) : 0;
	snprintf(name, sizeof(name), "node-%u-%" PRIu64 ".lock", id, prev);
	if (prev && lock_file_alive(sf->dir_fd, name)) {
		COH_LOG_ERR("node %u is already open in %s (pid %d)", id, sf->dir,
			    (int)atomic_load(&sf->ctl->pid));
		ret = -EADDRINUSE;
		goto err_unmap_ctl;
	}
	sf->incarnation = prev + 1;
	snprintf(name, sizeof(name), "node-%u-%" PRIu64 ".lock", id, sf->incarnation);
	sf->lock_fd = openat(sf->dir_fd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sf->lock_fd < 0) {
		ret = -errno;
		goto err_unmap_ctl;
	}
	ret = lock_range(sf->lock_fd, F_OFD_SETLK, F_WRLCK, SHM_LOCK_WAIT_BYTE, NULL);
	if (!ret)
		ret = lock_range(sf->lock_fd, F_OFD_SETLK, F_WRLCK, SHM_LOCK_ALIVE_BYTE, NULL);
	if (ret)
		goto err_close_lock;
	remove_stale(sf);

	sf->ctl->magic = SHM_CTL_MAGIC;
	sf->ctl->version = SHM_VERSION;
	sf->ctl->node = id;
	atomic_store(&sf->ctl->pid, (int32_t)getpid());
	atomic_store(&sf->ctl->incarnation, sf->incarnation);
	atomic_store(&sf->ctl->ready, 1);
	flock(sf->ctl_fd, LOCK_UN);
	return 0;

err_close_lock:
	close(sf->lock_fd);
	unlinkat(sf->dir_fd, name, 0);
err_unmap_ctl:
	munmap(sf->ctl, SHM_PAGE);
	sf->ctl = NULL;
err_close_ctl:
	close(sf->ctl_fd);
	return ret;
}

/* leave - give up this node's identity: peers' monitors see the ready flag drop and the lock
 * go. Unlinking first means nobody new finds the lock. */
static void leave(struct shm_fabric *sf)
{
	char name[64];

	atomic_store(&sf->ctl->ready, 0);
	snprintf(name, sizeof(name), "node-%u-%" PRIu64 ".lock", sf->base.node_id, sf->incarnation);
	unlinkat(sf->dir_fd, name, 0);
	close(sf->lock_fd);
	munmap(sf->ctl, SHM_PAGE);
	close(sf->ctl_fd);
}

static int shm_fabric_open(const struct coh_fabric_attr *attr, struct coh_fabric **fabp)
{
	struct shm_fabric *sf;
	struct statfs stf;
	uint32_t i;
	int ret;

	sf = calloc(1, sizeof(*sf));
	if (!sf)
		return -ENOMEM;
	ret = fabric_base_init(&sf->base, &shm_ops, attr);
	if (ret)
		goto err_free;
	sf->latency_ns = attr->shm_latency_ns;
	for (i = 0; i < COH_FABRIC_MAX_NODES; i++) {
		sf->peers[i].lock_fd = -1;
		sf->peers[i].pidfd = -1;
	}
	ret = -pthread_mutex_init(&sf->lock, NULL);
	if (ret)
		goto err_base_fini;
	sf->dir = strdup(attr->cluster);
	if (!sf->dir) {
		ret = -ENOMEM;
		goto err_mutex_destroy;
	}
	if (mkdir(sf->dir, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		COH_LOG_ERR("cannot create cluster directory %s: %s", sf->dir, strerror(errno));
		goto err_free_dir;
	}
	sf->dir_fd = open(sf->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sf->dir_fd < 0) {
		ret = -errno;
		COH_LOG_ERR("cannot open cluster directory %s: %s", sf->dir, strerror(errno));
		goto err_free_dir;
	}
	sf->tmpfs = fstatfs(sf->dir_fd, &stf) == 0 && stf.f_type == TMPFS_MAGIC;
	sf->rkey_seed = shm_random32();
	sf->mon_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sf->mon_fd < 0) {
		ret = -errno;
		goto err_close_dir;
	}
	ret = join(sf, sf->base.timeout_ms);
	if (ret)
		goto err_close_mon;
	ret = -pthread_create(&sf->monitor, NULL, shm_monitor, sf);
	if (ret)
		goto err_leave;
	*fabp = &sf->base;
	return 0;

err_leave:
	leave(sf);
err_close_mon:
	close(sf->mon_fd);
err_close_dir:
	close(sf->dir_fd);
err_free_dir:
	free(sf->dir);
err_mutex_destroy:
	pthread_mutex_destroy(&sf->lock);
err_base_fini:
	fabric_base_fini(&sf->base);
err_free:
	free(sf);
	return ret;
}

static int shm_fabric_close(struct coh_fabric *fab)
{
	struct shm_fabric *sf = to_shm_fabric(fab);
	uint32_t i;

	pthread_mutex_lock(&sf->lock);
	sf->mon_stop = true;
	pthread_mutex_unlock(&sf->lock);
	monitor_kick(sf);
	pthread_join(sf->monitor, NULL);
	for (i = 0; i < COH_FABRIC_MAX_NODES; i++)
		peer_release(&sf->peers[i]);
	leave(sf);
	close(sf->mon_fd);
	close(sf->dir_fd);
	free(sf->dir);
	pthread_mutex_destroy(&sf->lock);
	fabric_base_fini(&sf->base);
	free(sf);
	return 0;
}

static void shm_fabric_query(const struct coh_fabric *fab, struct coh_fabric_info *info)
{
	const struct shm_fabric *sf = container_of(fab, struct shm_fabric, base);

	info->provider = "shm";
	info->node_id = fab->node_id;
	info->native_flush = false;
	info->persistent = !sf->tmpfs;
	info->max_msg_size = SHM_MAX_MSG;
	/* A SEND that finds the peer's ring full reads its buffer later, so none is inline. */
	info->max_inline = 0;
	info->numa_node = -1;
	snprintf(info->device, sizeof(info->device), "shm");
	/* The lock probe and the pidfd both say the process is gone, not just unreachable. */
	info->peer_down_proven = true;
}

/*
 * shm_fence_peer - kill @peer's current incarnation: the cluster excluded it without proof that
 * it died (a stopped or stuck process that still holds its lock), and on one host the fence
 * agent is the kernel. Through the pidfd taken when the peer was attached, so that a pid reused
 * since is never hit; without one, the pid from its ctl page, checked against the incarnation.
 */
static int shm_fence_peer(struct coh_fabric *fab, uint32_t peer)
{
	struct shm_fabric *sf = to_shm_fabric(fab);
	struct shm_peer *p = &sf->peers[peer];
	int ret = 0;

	pthread_mutex_lock(&sf->lock);
	if (!atomic_load(&p->up_inc) || !p->ctl) {
		pthread_mutex_unlock(&sf->lock);
		return 0;
	}
	if (p->pidfd >= 0) {
		if (syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0) < 0 &&
		    errno != ESRCH)
			ret = -errno;
	} else if (atomic_load(&p->ctl->incarnation) == p->incarnation) {
		if (kill((pid_t)atomic_load(&p->ctl->pid), SIGKILL) < 0 && errno != ESRCH)
			ret = -errno;
	}
	pthread_mutex_unlock(&sf->lock);
	COH_LOG_WARN("node %u: fenced node %u (incarnation %llu) by SIGKILL: %s", fab->node_id,
		     peer, (unsigned long long)p->incarnation, ret ? strerror(-ret) : "sent");
	/* Its lock goes with it; the monitor reports the death as usual. */
	monitor_kick(sf);
	return ret;
}

/* Completion queues. */

/* shm_partition - coh_fabric_partition. Wakes this node's sleepers, so that what a cut held
 * is performed, or failed, without waiting out their bounds. */
static int shm_partition(struct coh_fabric *fab, uint64_t peers)
{
	struct shm_fabric *sf = container_of(fab, struct shm_fabric, base);

	atomic_store(&sf->cut, peers);
	shm_doorbell_ring(sf->ctl);
	return 0;
}

static int shm_cq_new(struct coh_fabric *fab, uint32_t depth, struct coh_cq **cqp)
{
	struct shm_cq *cq;

	cq = calloc(1, sizeof(*cq));
	if (!cq)
		return -ENOMEM;
	cq->ring = calloc(depth, sizeof(*cq->ring));
	if (!cq->ring)
		goto err_free_cq;
	cq->cap = depth;
	cq->fab = to_shm_fabric(fab);
	*cqp = &cq->base;
	return 0;

err_free_cq:
	free(cq);
	return -ENOMEM;
}

static int shm_cq_delete(struct coh_cq *base)
{
	struct shm_cq *cq = container_of(base, struct shm_cq, base);

	free(cq->eps);
	free(cq->ring);
	free(cq);
	return 0;
}

/* shm_cq_push - queue a completion. Cannot overflow: endpoints reserved their depth. */
void shm_cq_push(struct shm_cq *cq, struct shm_ep *ep, const struct coh_wc *wc)
{
	struct shm_cqe *e = &cq->ring[(cq->head + cq->count) % cq->cap];

	e->wc = *wc;
	e->ep = ep;
	e->ready_ns = cq->fab->latency_ns ? verbs_now_ns() + cq->fab->latency_ns : 0;
	cq->count++;
}

int shm_cq_attach(struct shm_cq *cq, struct shm_ep *ep)
{
	struct shm_ep **eps;
	uint32_t i;

	for (i = 0; i < cq->n_eps; i++) {
		if (cq->eps[i] == ep)
			return 0;
	}
	if (cq->n_eps == cq->cap_eps) {
		uint32_t cap = cq->cap_eps ? cq->cap_eps * 2 : 4;

		eps = calloc(cap, sizeof(*eps));
		if (!eps)
			return -ENOMEM;
		if (cq->n_eps)
			memcpy(eps, cq->eps, cq->n_eps * sizeof(*eps));
		free(cq->eps);
		cq->eps = eps;
		cq->cap_eps = cap;
	}
	cq->eps[cq->n_eps++] = ep;
	return 0;
}

/* shm_cq_detach - forget @ep: stop driving it, and unlink its queued completions from it (they
 * stay in the queue for the owner to take). */
void shm_cq_detach(struct shm_cq *cq, struct shm_ep *ep)
{
	uint32_t i;

	for (i = 0; i < cq->n_eps; i++) {
		if (cq->eps[i] == ep) {
			cq->eps[i] = cq->eps[--cq->n_eps];
			break;
		}
	}
	for (i = 0; i < cq->count; i++) {
		struct shm_cqe *e = &cq->ring[(cq->head + i) % cq->cap];

		if (e->ep == ep)
			e->ep = NULL;
	}
}

static void cq_progress(struct shm_cq *cq)
{
	uint32_t i;

	for (i = 0; i < cq->n_eps; i++)
		shm_ep_progress(cq->eps[i]);
}

static int shm_cq_poll(struct coh_cq *base, struct coh_wc *wc, int max)
{
	struct shm_cq *cq = container_of(base, struct shm_cq, base);
	int n = 0;

	/* Completions already queued (a one-sided operation completes as it is posted) are
	 * returned without driving every endpoint first: that walk touches rings other processes
	 * write, and costs more than the operation. The next poll drives them. */
	if (!cq->count)
		cq_progress(cq);
	while (n < max && cq->count) {
		struct shm_cqe *e = &cq->ring[cq->head];

		/* Held back for the emulated latency; every entry has the same, so they come
		 * ready in order. */
		if (e->ready_ns && verbs_now_ns() < e->ready_ns)
			break;
		wc[n++] = e->wc;
		if (e->ep)
			shm_ep_completed(e->ep, e->wc.opcode);
		cq->head = (cq->head + 1) % cq->cap;
		cq->count--;
	}
	return n;
}

static int shm_cq_sleep(struct coh_cq *base, int timeout_ms)
{
	struct shm_cq *cq = container_of(base, struct shm_cq, base);
	struct shm_ctl *ctl = cq->fab->ctl;
	uint32_t seen;
	int ret = 0;

	if (cq->count) {
		/* Only completions held back for the emulated latency: sleep until the first is
		 * due (bounded by the wait's own timeout). */
		uint64_t now = verbs_now_ns(), due = cq->ring[cq->head].ready_ns;
		uint64_t max_ns = (uint64_t)timeout_ms * 1000000ull;

		if (due > now) {
			uint64_t d = due - now < max_ns ? due - now : max_ns;
			struct timespec ts = { (time_t)(d / 1000000000ull),
					       (long)(d % 1000000000ull) };

			nanosleep(&ts, NULL);
		}
		return 0;
	}
	seen = atomic_load(&ctl->doorbell);
	atomic_fetch_add(&ctl->waiters, 1);
	/* Re-check after registering: anything that arrived before the doorbell was read is seen
	 * here; anything after it changes the doorbell and the futex returns at once. */
	cq_progress(cq);
	/* Under a cut, held operations fail by the clock, not by an arrival: look again soon. */
	if (atomic_load_explicit(&cq->fab->cut, memory_order_relaxed) && timeout_ms > 50)
		timeout_ms = 50;
	if (!cq->count && !atomic_load(&base->woken))
		ret = shm_doorbell_sleep(ctl, seen, timeout_ms);
	atomic_fetch_sub(&ctl->waiters, 1);
	return ret;
}

/* shm_cq_wake - ring this node's doorbell: every sleeper here wakes (the others find nothing and
 * sleep again); one about to sleep sees the flag (coh_cq_wake sets it before the ring). */
static void shm_cq_wake(struct coh_cq *base)
{
	struct shm_cq *cq = container_of(base, struct shm_cq, base);

	shm_doorbell_ring(cq->fab->ctl);
}

const struct coh_fabric_ops shm_ops = {
	.name = "shm",
	.id = COH_PROVIDER_SHM,
	.fabric_open = shm_fabric_open,
	.fabric_close = shm_fabric_close,
	.fabric_query = shm_fabric_query,
	.fence_peer = shm_fence_peer,
	.partition = shm_partition,
	.mr_new = shm_mr_new,
	.mr_reg = shm_mr_reg,
	.mr_new_pmem = shm_mr_new_pmem,
	.mr_delete = shm_mr_delete,
	.mr_rekey = shm_mr_rekey,
	.mr_persist = shm_mr_persist,
	.cq_new = shm_cq_new,
	.cq_delete = shm_cq_delete,
	.cq_poll = shm_cq_poll,
	.cq_sleep = shm_cq_sleep,
	.cq_wake = shm_cq_wake,
	.ep_new = shm_ep_new,
	.ep_delete = shm_ep_delete,
	.ep_is_up = shm_ep_is_up,
	.ep_peer_inc = shm_ep_peer_inc,
	.rmr_import = shm_rmr_import,
	.rmr_delete = shm_rmr_delete,
	.post = shm_post,
	.post_recv = shm_post_recv,
};
