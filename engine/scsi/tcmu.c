/*
 * tcmu.c - the TCMU front end (tcmu.h): a user backstore per exported volume, created or
 * reattached through configfs, its UIO ring mapped, and one ring thread that hands each command
 * to the SCSI unit (coh_scsi_cmd_exec, passed in as coh_tcmu_dev_attr.exec). Commands run on
 * the engine and complete out of order on its threads; a completion writes its answer into the
 * oldest open ring slot (tcmu_ring.c) and tells the kernel with a 4-byte write to the UIO fd.
 *
 * Threads: the ring thread (tcmu_ring_main) polls the UIO fd with a bounded timeout, parses new
 * entries and calls coh_scsi_cmd_exec, which may answer at once on the same thread. Completions
 * (tcmu_cmd_done) run on any thread; they take only the ring's lock (tcmu_ring.lock: a few
 * stores) and the free list's lock, never block, and never call back into the unit.
 *
 * Leaves out: netlink (nl_reply_supported=-1: the kernel never waits for userspace at enable),
 * TMR handling (tmr_notification stays 0: the kernel waits for the commands, which always
 * finish), KEEP_BUF, BIDI Data-In, the LIO fabric side (scripts/lio.sh).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cohort/scsi.h"
#include "cohort/tcmu.h"
#include "tcmu_ring.h"

#define TCMU_CORE_DEFAULT "/sys/kernel/config/target/core"
#define TCMU_UIO_CLASS "/sys/class/uio"
#define TCMU_PATH_MAX 512
#define TCMU_NAME_MAX 64
#define TCMU_POLL_MS_DEFAULT 200
#define TCMU_OPEN_TRIES 50 /* a killed predecessor's fd is released by the kernel shortly */

/* One command in flight: the unit's view of it plus what the ring entry held. */
struct tcmu_cmd {
	struct coh_scsi_cmd sc;
	struct coh_tcmu_dev *dev;
	uint16_t cmd_id;
	size_t buf_len; /* the iovecs' total: a shorter Data-In is reported with READ_LEN */
	uint8_t cdb[TCMU_RING_CDB_MAX];
	struct iovec iov[TCMU_RING_IOV_MAX];
	struct tcmu_cmd *next_free;
};

struct coh_tcmu_dev {
	char name[TCMU_NAME_MAX + 1];
	char dir[TCMU_PATH_MAX];
	char uio_dev[300];
	struct coh_scsi_lu *lu;
	void (*exec)(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd);
	uint32_t poll_ms, cmd_time_out_s;
	int fd;
	void *map;
	size_t map_size;
	struct tcmu_ring ring;
	struct tcmu_ring_entry entry; /* the ring thread's */
	pthread_t thread;
	bool thread_started;
	atomic_bool stop;

	/* The free list and the in-flight count (@lock); delete waits on @idle for none. */
	pthread_mutex_t lock;
	pthread_cond_t idle;
	struct tcmu_cmd *free;
	uint32_t inflight;

	atomic_uint_fast64_t cmds, bad, completed;
	bool reattached;
	atomic_bool broken;
};

static int tcmu_errno(void)
{
	return errno ? -errno : -EIO;
}

/* tcmu_cfs_write - write @val to @dev's configfs file @rel; the error names the file. */
static int tcmu_cfs_write(const struct coh_tcmu_dev *dev, const char *rel, const char *val)
{
	char path[TCMU_PATH_MAX + 64];
	size_t len = strlen(val);
	ssize_t n;
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dev->dir, rel);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = tcmu_errno();
		fprintf(stderr, "tcmu %s: open %s: %s\n", dev->name, path, strerror(-ret));
		return ret;
	}
	n = write(fd, val, len);
	if (n != (ssize_t)len) {
		ret = n < 0 ? tcmu_errno() : -EIO;
		fprintf(stderr, "tcmu %s: write '%s' to %s: %s\n", dev->name, val, path,
			strerror(-ret));
	}
	close(fd);
	return ret;
}

/* tcmu_read_file - the first line of @path into @buf (newline dropped); -errno. */
static int tcmu_read_file(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return tcmu_errno();
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return tcmu_errno();
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* tcmu_find_uio - the /dev/uioN whose name is tcm-user/<hba>/<name>/cohort/<name>, and its map
 * size. */
static int tcmu_find_uio(struct coh_tcmu_dev *dev, uint32_t hba)
{
	char want[TCMU_PATH_MAX], path[TCMU_PATH_MAX + 300], buf[TCMU_PATH_MAX];
	struct dirent *de;
	DIR *d;
	int ret = -ENOENT;

	snprintf(want, sizeof(want), "tcm-user/%u/%s/cohort/%s", hba, dev->name, dev->name);
	d = opendir(TCMU_UIO_CLASS);
	if (!d) {
		ret = tcmu_errno();
		fprintf(stderr, "tcmu %s: %s: %s\n", dev->name, TCMU_UIO_CLASS, strerror(-ret));
		return ret;
	}
	while ((de = readdir(d))) {
		unsigned long long size;
		char *end;

		if (strncmp(de->d_name, "uio", 3))
			continue;
		snprintf(path, sizeof(path), "%s/%s/name", TCMU_UIO_CLASS, de->d_name);
		if (tcmu_read_file(path, buf, sizeof(buf)) || strcmp(buf, want))
			continue;
		snprintf(path, sizeof(path), "%s/%s/maps/map0/size", TCMU_UIO_CLASS, de->d_name);
		ret = tcmu_read_file(path, buf, sizeof(buf));
		if (ret) {
			fprintf(stderr, "tcmu %s: read %s: %s\n", dev->name, path, strerror(-ret));
			break;
		}
		errno = 0;
		size = strtoull(buf, &end, 0);
		if (errno || end == buf || !size || size > SIZE_MAX) {
			fprintf(stderr, "tcmu %s: %s: bad map size '%s'\n", dev->name, path, buf);
			ret = -EINVAL;
			break;
		}
		dev->map_size = (size_t)size;
		snprintf(dev->uio_dev, sizeof(dev->uio_dev), "/dev/%s", de->d_name);
		ret = 0;
		break;
	}
	closedir(d);
	if (ret == -ENOENT)
		fprintf(stderr, "tcmu %s: no UIO device named %s\n", dev->name, want);
	return ret;
}

static bool tcmu_name_ok(const char *name)
{
	size_t i, n = name ? strlen(name) : 0;

	if (!n || n > TCMU_NAME_MAX)
		return false;
	for (i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

/* tcmu_create - a new backstore: control, cmd_time_out, no reservations, enable, then the serial (which the kernel
 * accepts until a LUN exports the device). */
static int tcmu_create(struct coh_tcmu_dev *dev, const struct coh_tcmu_dev_attr *attr,
		       uint32_t data_mb, uint32_t max_sectors)
{
	char val[512], serial[33];
	int ret, i;

	if (mkdir(dev->dir, 0755) && errno != EEXIST) {
		ret = tcmu_errno();
		fprintf(stderr, "tcmu %s: mkdir %s: %s\n", dev->name, dev->dir, strerror(-ret));
		return ret;
	}
	snprintf(val, sizeof(val),
		 "dev_config=cohort/%s,dev_size=%" PRIu64
		 ",hw_block_size=%u,hw_max_sectors=%u,max_data_area_mb=%u,nl_reply_supported=-1",
		 dev->name, attr->nblocks * attr->block_size, attr->block_size, max_sectors,
		 data_mb);
	ret = tcmu_cfs_write(dev, "control", val);
	if (ret)
		goto rmdir_dev;
	snprintf(val, sizeof(val), "%u", dev->cmd_time_out_s);
	ret = tcmu_cfs_write(dev, "attrib/cmd_time_out", val);
	if (ret)
		goto rmdir_dev;
	/* Persistent reservations: the kernel would emulate them in this node alone, so a
	 * reservation taken through one controller would not hold through another, and a host
	 * cluster fencing with them would be unprotected while believing it was. Either the unit
	 * keeps them in the volume, cluster-wide (emulate_pr on, pgr_support off: PERSISTENT RESERVE
	 * IN/OUT come to the ring, and the kernel no longer checks conflicts itself), or they are
	 * refused (INVALID COMMAND OPERATION CODE): docs/frontend.md, "Persistent reservations". */
	ret = tcmu_cfs_write(dev, "attrib/emulate_pr", attr->reservations ? "1" : "0");
	if (ret)
		goto rmdir_dev;
	if (attr->reservations) {
		ret = tcmu_cfs_write(dev, "attrib/pgr_support", "0");
		if (ret)
			goto rmdir_dev;
	}
	ret = tcmu_cfs_write(dev, "enable", "1");
	if (ret)
		goto rmdir_dev;
	for (i = 0; i < 16; i++)
		snprintf(serial + 2 * i, 3, "%02x", attr->volume_id[i]);
	ret = tcmu_cfs_write(dev, "wwn/vpd_unit_serial", serial);
	if (ret)
		goto rmdir_dev;
	return 0;

rmdir_dev:
	if (rmdir(dev->dir))
		fprintf(stderr, "tcmu %s: rmdir %s: %s\n", dev->name, dev->dir, strerror(errno));
	return ret;
}

static int tcmu_open_uio(struct coh_tcmu_dev *dev)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	int i, ret = 0;

	/* A predecessor killed a moment ago may still hold the device (a second open gets
	 * EBUSY) until the kernel has torn its process down: a bounded number of tries. */
	for (i = 0; i < TCMU_OPEN_TRIES; i++) {
		dev->fd = open(dev->uio_dev, O_RDWR | O_CLOEXEC);
		if (dev->fd >= 0)
			return 0;
		ret = tcmu_errno();
		if (ret != -EBUSY)
			break;
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "tcmu %s: open %s: %s\n", dev->name, dev->uio_dev, strerror(-ret));
	return ret;
}

static void tcmu_kick(struct coh_tcmu_dev *dev)
{
	uint32_t one = 1;

	/* uio_write() takes exactly 4 bytes and runs the kernel's completion handling. */
	if (write(dev->fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		fprintf(stderr, "tcmu %s: notify %s: %s\n", dev->name, dev->uio_dev,
			strerror(errno));
}

static void tcmu_answer(struct coh_tcmu_dev *dev, uint16_t cmd_id, uint8_t status,
			const uint8_t *sense, uint32_t sense_len, uint32_t read_len)
{
	if (tcmu_ring_complete(&dev->ring, cmd_id, status, sense, sense_len, read_len)) {
		atomic_fetch_add(&dev->completed, 1);
		tcmu_kick(dev);
	} else {
		fprintf(stderr, "tcmu %s: command %u answered with no open slot\n", dev->name,
			cmd_id);
	}
}

static void tcmu_cmd_put(struct coh_tcmu_dev *dev, struct tcmu_cmd *c)
{
	pthread_mutex_lock(&dev->lock);
	c->next_free = dev->free;
	dev->free = c;
	if (!--dev->inflight)
		pthread_cond_broadcast(&dev->idle);
	pthread_mutex_unlock(&dev->lock);
}

static struct tcmu_cmd *tcmu_cmd_get(struct coh_tcmu_dev *dev)
{
	struct tcmu_cmd *c;

	pthread_mutex_lock(&dev->lock);
	c = dev->free;
	if (c)
		dev->free = c->next_free;
	pthread_mutex_unlock(&dev->lock);
	if (!c)
		c = malloc(sizeof(*c));
	if (c) {
		pthread_mutex_lock(&dev->lock);
		dev->inflight++;
		pthread_mutex_unlock(&dev->lock);
	}
	return c;
}

/* tcmu_cmd_done - the unit's answer, on whatever thread finished the command. */
static void tcmu_cmd_done(struct coh_scsi_cmd *sc, void *arg)
{
	struct tcmu_cmd *c = arg;
	struct coh_tcmu_dev *dev = c->dev;
	uint32_t read_len = UINT32_MAX;

	/* READ_LEN only for a Data-In shorter than the buffer: for a write, data_len is 0, and a
	 * read length would turn into an underflow residual on a command that moved all its
	 * data. */
	if (sc->data_len && sc->data_len < c->buf_len)
		read_len = sc->data_len;
	tcmu_answer(dev, c->cmd_id, sc->status,
		    sc->status == COH_SCSI_CHECK_CONDITION ? sc->sense : NULL,
		    sc->status == COH_SCSI_CHECK_CONDITION ? sc->sense_len : 0, read_len);
	tcmu_cmd_put(dev, c);
}

/* tcmu_dispatch - one parsed CMD entry: to the unit, or answered here when it cannot go. */
static void tcmu_dispatch(struct coh_tcmu_dev *dev, const struct tcmu_ring_entry *e)
{
	/* Fixed-format sense, ILLEGAL REQUEST, INVALID FIELD IN CDB (24h/00h). */
	static const uint8_t bad_sense[18] = { 0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0 };
	struct tcmu_cmd *c;
	uint32_t i;

	atomic_fetch_add(&dev->cmds, 1);
	if (e->bad) {
		atomic_fetch_add(&dev->bad, 1);
		fprintf(stderr,
			"tcmu %s: malformed ring entry (command %u) answered with CHECK "
			"CONDITION\n",
			dev->name, e->cmd_id);
		tcmu_answer(dev, e->cmd_id, COH_SCSI_CHECK_CONDITION, bad_sense, sizeof(bad_sense),
			    UINT32_MAX);
		return;
	}
	c = tcmu_cmd_get(dev);
	if (!c) {
		tcmu_answer(dev, e->cmd_id, COH_SCSI_BUSY, NULL, 0, UINT32_MAX);
		return;
	}
	memset(&c->sc, 0, sizeof(c->sc));
	c->dev = dev;
	c->cmd_id = e->cmd_id;
	memcpy(c->cdb, e->cdb, e->cdb_len);
	c->buf_len = 0;
	for (i = 0; i < e->iov_cnt; i++) {
		c->iov[i] = e->iov[i];
		c->buf_len += e->iov[i].iov_len;
	}
	c->sc.cmd_size = sizeof(c->sc);
	c->sc.cdb = c->cdb;
	c->sc.cdb_len = e->cdb_len;
	c->sc.iov = c->iov;
	c->sc.iov_cnt = e->iov_cnt;
	c->sc.done = tcmu_cmd_done;
	c->sc.done_arg = c;
	dev->exec(dev->lu, &c->sc);
}

static void tcmu_drain(struct coh_tcmu_dev *dev)
{
	int ret;

	while ((ret = tcmu_ring_next(&dev->ring, &dev->entry)) == 1)
		if (dev->entry.kind == TCMU_RING_CMD)
			tcmu_dispatch(dev, &dev->entry);
	if (tcmu_ring_skip(&dev->ring))
		tcmu_kick(dev);
	if (ret < 0 && !atomic_exchange(&dev->broken, true))
		fprintf(stderr,
			"tcmu %s: broken ring entry at offset %u: nothing more is served "
			"(restart to reset the ring)\n",
			dev->name, dev->ring.next);
}

static void *tcmu_ring_main(void *arg)
{
	struct coh_tcmu_dev *dev = arg;
	struct pollfd p = { .fd = dev->fd, .events = POLLIN };

	while (!atomic_load(&dev->stop)) {
		int n = poll(&p, 1, (int)dev->poll_ms);

		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "tcmu %s: poll %s: %s\n", dev->name, dev->uio_dev,
				strerror(errno));
			break;
		}
		if (n > 0 && (p.revents & POLLIN)) {
			uint32_t count;

			/* Consume the event count, or poll stays readable. */
			if (read(dev->fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
				fprintf(stderr, "tcmu %s: read %s: %s\n", dev->name, dev->uio_dev,
					strerror(errno));
		}
		if (!atomic_load(&dev->broken))
			tcmu_drain(dev);
	}
	return NULL;
}

int coh_tcmu_dev_new(const struct coh_tcmu_dev_attr *attr, struct coh_tcmu_dev **devp)
{
	char path[TCMU_PATH_MAX + 64], buf[64];
	const char *core;
	struct coh_tcmu_dev *dev;
	uint32_t data_mb, max_sectors;
	struct stat st;
	int ret;

	if (!attr || !devp || attr->attr_size < sizeof(*attr) || !attr->lu || !attr->exec ||
	    !tcmu_name_ok(attr->name) || attr->hba > 1023 || !attr->nblocks ||
	    attr->block_size < 512 || attr->block_size > 65536 ||
	    (attr->block_size & (attr->block_size - 1)) || attr->nblocks > UINT64_MAX / 65536)
		return -EINVAL;
	data_mb = attr->max_data_area_mb ? attr->max_data_area_mb : COH_TCMU_DATA_AREA_MB_DEFAULT;
	max_sectors = attr->max_sectors ? attr->max_sectors : COH_TCMU_MAX_SECTORS_DEFAULT;
	/* One command's data must fit the data area many times over, or commands queue. */
	/* The longest command must fit the data area several times over (or commands queue in
	 * the kernel), and in the iovecs a command can carry: one per 4 KiB data page at worst. */
	if (data_mb > 2048 ||
	    (uint64_t)max_sectors * attr->block_size * 4 > (uint64_t)data_mb << 20 ||
	    (uint64_t)max_sectors * attr->block_size / 4096 + 1 > TCMU_RING_IOV_MAX)
		return -EINVAL;
	core = attr->configfs ? attr->configfs : TCMU_CORE_DEFAULT;
	if (stat(core, &st) || !S_ISDIR(st.st_mode)) {
		fprintf(stderr,
			"tcmu %s: %s: no configfs target core (modules target_core_user, "
			"configfs mounted?)\n",
			attr->name, core);
		return -ENOENT;
	}
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	snprintf(dev->name, sizeof(dev->name), "%s", attr->name);
	dev->lu = attr->lu;
	dev->exec = attr->exec;
	dev->fd = -1;
	dev->poll_ms = attr->poll_ms ? attr->poll_ms : TCMU_POLL_MS_DEFAULT;
	dev->cmd_time_out_s =
	    attr->cmd_time_out_s ? attr->cmd_time_out_s : COH_TCMU_CMD_TIME_OUT_DEFAULT;
	pthread_mutex_init(&dev->lock, NULL);
	pthread_cond_init(&dev->idle, NULL);

	/* The HBA directory first (configfs makes the device's parent on mkdir of user_<hba>). */
	snprintf(dev->dir, sizeof(dev->dir), "%s/user_%u", core, attr->hba);
	if (mkdir(dev->dir, 0755) && errno != EEXIST) {
		ret = tcmu_errno();
		fprintf(stderr, "tcmu %s: mkdir %s: %s\n", dev->name, dev->dir, strerror(-ret));
		goto free_dev;
	}
	snprintf(dev->dir, sizeof(dev->dir), "%s/user_%u/%s", core, attr->hba, dev->name);
	snprintf(path, sizeof(path), "%s/enable", dev->dir);
	if (!tcmu_read_file(path, buf, sizeof(buf)) && !strcmp(buf, "1")) {
		dev->reattached = true;
	} else {
		ret = tcmu_create(dev, attr, data_mb, max_sectors);
		if (ret)
			goto free_dev;
	}
	ret = tcmu_find_uio(dev, attr->hba);
	if (ret)
		goto remove_dev;
	ret = tcmu_open_uio(dev);
	if (ret)
		goto remove_dev;
	if (dev->reattached) {
		/* A previous life left the ring: block new commands (they get BUSY and are
		 * retried), fail what it had in flight with BUSY and restart the ring at 0
		 * (TCMU.md, "Userspace death and reopen"). */
		ret = tcmu_cfs_write(dev, "action/block_dev", "1");
		if (ret)
			goto close_fd;
		ret = tcmu_cfs_write(dev, "action/reset_ring", "1");
		if (ret)
			goto unblock;
	}
	dev->map = mmap(NULL, dev->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, dev->fd, 0);
	if (dev->map == MAP_FAILED) {
		ret = tcmu_errno();
		dev->map = NULL;
		fprintf(stderr, "tcmu %s: mmap %s (%zu bytes): %s\n", dev->name, dev->uio_dev,
			dev->map_size, strerror(-ret));
		goto unblock;
	}
	ret = tcmu_ring_init(&dev->ring, dev->map, dev->map_size);
	if (ret) {
		fprintf(stderr,
			"tcmu %s: %s: mailbox version or flags not supported (version 2 "
			"with out-of-order completion needed)\n",
			dev->name, dev->uio_dev);
		goto unmap;
	}
	ret = -pthread_create(&dev->thread, NULL, tcmu_ring_main, dev);
	if (ret)
		goto fini_ring;
	dev->thread_started = true;
	if (dev->reattached) {
		ret = tcmu_cfs_write(dev, "action/block_dev", "0");
		if (ret)
			goto stop_thread;
	}
	fprintf(stderr, "tcmu %s: %s %s on %s (%zu MiB mapped)\n", dev->name,
		dev->reattached ? "reattached to" : "created", dev->dir, dev->uio_dev,
		dev->map_size >> 20);
	*devp = dev;
	return 0;

stop_thread:
	atomic_store(&dev->stop, true);
	pthread_join(dev->thread, NULL);
fini_ring:
	tcmu_ring_fini(&dev->ring);
unmap:
	munmap(dev->map, dev->map_size);
unblock:
	if (dev->reattached)
		tcmu_cfs_write(dev, "action/block_dev", "0");
close_fd:
	close(dev->fd);
remove_dev:
	/* A device this call created goes again; one it found stays for the next try. */
	if (!dev->reattached && rmdir(dev->dir))
		fprintf(stderr, "tcmu %s: rmdir %s: %s\n", dev->name, dev->dir, strerror(errno));
free_dev:
	pthread_cond_destroy(&dev->idle);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
	return ret;
}

int coh_tcmu_dev_delete(struct coh_tcmu_dev *dev, bool remove)
{
	struct timespec dl;
	struct tcmu_cmd *c;
	int ret = 0, w = 0;

	if (!dev)
		return 0;
	if (dev->thread_started) {
		atomic_store(&dev->stop, true);
		pthread_join(dev->thread, NULL);
		dev->thread_started = false;
	}
	/* Commands in flight still write their answers into the ring: wait for them, as long as
	 * the kernel itself would (cmd_time_out) plus a margin. */
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += dev->cmd_time_out_s + 5;
	pthread_mutex_lock(&dev->lock);
	while (dev->inflight && w != ETIMEDOUT)
		w = pthread_cond_timedwait(&dev->idle, &dev->lock, &dl);
	pthread_mutex_unlock(&dev->lock);
	if (dev->inflight) {
		fprintf(stderr, "tcmu %s: %u commands still in flight; the device is left mapped\n",
			dev->name, dev->inflight);
		return -ETIMEDOUT;
	}
	tcmu_ring_fini(&dev->ring);
	munmap(dev->map, dev->map_size);
	close(dev->fd);
	if (remove && rmdir(dev->dir)) {
		ret = tcmu_errno();
		fprintf(stderr, "tcmu %s: rmdir %s: %s%s\n", dev->name, dev->dir, strerror(-ret),
			ret == -EBUSY ? " (a LUN still links it: unlink it first)" : "");
	}
	while ((c = dev->free)) {
		dev->free = c->next_free;
		free(c);
	}
	pthread_cond_destroy(&dev->idle);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
	return ret;
}

void coh_tcmu_dev_stats(struct coh_tcmu_dev *dev, struct coh_tcmu_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->cmds = atomic_load(&dev->cmds);
	st->bad = atomic_load(&dev->bad);
	st->completed = atomic_load(&dev->completed);
	pthread_mutex_lock(&dev->lock);
	st->inflight = dev->inflight;
	pthread_mutex_unlock(&dev->lock);
	st->reattached = dev->reattached;
	st->broken = atomic_load(&dev->broken);
}

const char *coh_tcmu_dev_path(const struct coh_tcmu_dev *dev)
{
	return dev->dir;
}
