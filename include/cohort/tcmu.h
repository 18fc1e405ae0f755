/*
 * tcmu.h - the TCMU front end: exports a SCSI logical unit (scsi.h) to the Linux LIO target as a
 * TCMU user backstore, so that any LIO fabric (tcm_loop, iSCSI, FC) reaches the volume.
 *
 * Consumer tier (cohortd). One struct coh_tcmu_dev per exported volume on
 * this node: it creates the backstore through configfs (or reattaches to the one a previous life
 * of the process left, after a crash or restart), maps its UIO command ring and runs one ring
 * thread that hands every command to coh_scsi_cmd_exec. Commands complete out of order, from the
 * engine's threads; docs/frontend.md has the threading and the configfs sequence.
 *
 * Leaves out: LIO fabrics and LUNs (scripts/lio.sh links the backstore to tcm_loop or iSCSI),
 * netlink (devices are created with nl_reply_supported=-1, so the kernel never waits for a
 * netlink answer), task management (the kernel waits for the commands to finish), KEEP_BUF.
 */
#ifndef COHORT_TCMU_H
#define COHORT_TCMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohort/scsi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define COH_TCMU_CMD_TIME_OUT_DEFAULT 30 /* seconds: the kernel's own default */
#define COH_TCMU_DATA_AREA_MB_DEFAULT 64
#define COH_TCMU_MAX_SECTORS_DEFAULT 128 /* logical blocks per command: the kernel's default */

/**
 * struct coh_tcmu_dev_attr - one exported volume.
 * @attr_size: sizeof(struct coh_tcmu_dev_attr) as the caller was built with
 * @hba: the TCMU HBA number (configfs core/user_<hba>), 0 .. 1023; one per node is usual
 * @name: the backstore's name (letters, digits, '_', '-', '.'; at most 64): the configfs
 *        directory core/user_<hba>/<name>, and dev_config "cohort/<name>"
 * @nblocks, @block_size: the size the kernel sees (the unit's)
 * @volume_id: the volume's identity: wwn/vpd_unit_serial gets its 32 hex digits, the serial the
 *             unit reports in VPD 0x80
 * @cmd_time_out_s: attrib/cmd_time_out, how long the kernel waits for a command before it fails
 *                  it (NOT READY, 08h): bounds a host's wait when this process is dead; 0 means
 *                  COH_TCMU_CMD_TIME_OUT_DEFAULT. Only set on a new device.
 * @max_data_area_mb: the data area (commands in flight times their size); 0 means
 *                    COH_TCMU_DATA_AREA_MB_DEFAULT
 * @max_sectors: hw_max_sectors, the longest command in logical blocks (at most 1 MiB of data);
 *               0 means COH_TCMU_MAX_SECTORS_DEFAULT. The unit's max_xfer_blocks (VPD 0xB0, what
 *               hosts send) must not be larger.
 * @lu: the unit that executes the commands (not owned; outlives the device)
 * @exec: how a command reaches @lu: coh_scsi_cmd_exec, or a test's own with its contract (the
 *        command's done runs exactly once, on any thread); passed in, so that the front end
 *        is built and tested apart from the unit
 * @poll_ms: the ring thread's poll bound, so that it notices a stop; 0 means 200
 * @configfs: the target core directory; NULL means /sys/kernel/config/target/core
 * @reservations: persistent reservations reach @lu (attrib/emulate_pr=1, attrib/pgr_support=0),
 *                which keeps them cluster-wide: only for a unit with a reservation table and one
 *                initiator (struct coh_scsi_lu_attr). false: the kernel refuses them
 *                (emulate_pr=0). Only set on a new device
 */
struct coh_tcmu_dev_attr {
	size_t attr_size;
	uint32_t hba;
	const char *name;
	uint64_t nblocks;
	uint32_t block_size;
	uint8_t volume_id[16];
	uint32_t cmd_time_out_s;
	uint32_t max_data_area_mb;
	uint32_t max_sectors;
	struct coh_scsi_lu *lu;
	void (*exec)(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd);
	uint32_t poll_ms;
	const char *configfs;
	bool reservations;
};

struct coh_tcmu_dev;

/**
 * struct coh_tcmu_stats - a device's counters.
 * @cmds: commands taken from the ring; @bad: of them, malformed entries answered with CHECK
 * CONDITION without being executed; @completed: answers written; @inflight: executing now;
 * @reattached: the device existed and was reattached (block_dev, reset_ring); @broken: the ring
 * held an entry that could not be read past, and the device serves nothing more
 */
struct coh_tcmu_stats {
	uint64_t cmds, bad, completed;
	uint32_t inflight;
	bool reattached, broken;
};

/**
 * coh_tcmu_dev_new - export @attr->lu as TCMU backstore core/user_<hba>/<name>: create and enable
 * it, or reattach to it when it already exists (a restart), then serve its ring. Returns 0;
 * -EINVAL (bad attributes); -ENOENT (no configfs target core: modules not loaded, or the UIO
 * device not found); -EPROTO (a mailbox version or flags this front end does not speak); or the
 * -errno of the configfs write, open or mmap that failed (logged, naming the file).
 */
int coh_tcmu_dev_new(const struct coh_tcmu_dev_attr *attr, struct coh_tcmu_dev **devp);

/**
 * coh_tcmu_dev_delete - stop serving: the ring thread stops taking commands, the commands in
 * flight finish (bounded by the device's cmd_time_out), the ring is unmapped. Without @remove the
 * backstore stays, and commands that arrive meanwhile wait in the ring for the next
 * coh_tcmu_dev_new (or time out). With @remove the backstore is removed too, which the kernel
 * refuses (-EBUSY, logged) while a LUN links it: unlink it first (scripts/lio.sh clean). Returns
 * 0 or -errno; the device is freed either way, except -ETIMEDOUT (commands still in flight: it
 * is left allocated, as the engine may still complete them).
 */
int coh_tcmu_dev_delete(struct coh_tcmu_dev *dev, bool remove);

/** coh_tcmu_dev_stats - copy the counters. */
void coh_tcmu_dev_stats(struct coh_tcmu_dev *dev, struct coh_tcmu_stats *st);

/** coh_tcmu_dev_path - the backstore's configfs directory (what a LUN links to). */
const char *coh_tcmu_dev_path(const struct coh_tcmu_dev *dev);

#ifdef __cplusplus
}
#endif

#endif
