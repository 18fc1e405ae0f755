/*
 * fuzz_tcmu.c - fuzz target for the TCMU ring-entry parser (engine/scsi/tcmu_ring.c): the input
 * is laid out as a device's mapping (a valid mailbox, then the bytes as the command ring, then a
 * data area), cmd_head set from the input, and every queued entry is parsed and answered.
 * Built with libFuzzer (COHORT_FUZZ) and always with fuzz_driver.c, a bounded random driver that
 * ctest runs (fuzz_tcmu_bounded).
 * Properties: nothing crashes or reads outside the mapping (ASan in the libFuzzer build); every
 * buffer a parsed command carries lies inside the data area; every command parsed can be answered
 * and the tail then stands where the parser stopped.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/scsi/tcmu_ring.h"

/* <linux/uio.h>, which the TCMU header includes, defines struct iovec as <sys/uio.h> does;
 * the kernel's gets another name here (the same layout). */
#define iovec tcmu_kernel_iovec
#include <linux/target_core_user.h>
#undef iovec

#define FT_CMDR_OFF 128u
#define FT_CMDR_SIZE 1024u
#define FT_DATA 4096u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t map[FT_CMDR_OFF + FT_CMDR_SIZE + FT_DATA];
	static struct tcmu_ring_entry e;
	struct tcmu_mailbox mb;
	struct tcmu_ring r;
	uint32_t head, i, parsed = 0, open = 0;
	int ret;

	if (size < 4)
		return 0;
	memset(map, 0, sizeof(map));
	memset(&mb, 0, sizeof(mb));
	mb.version = TCMU_MAILBOX_VERSION;
	mb.flags = TCMU_MAILBOX_FLAG_CAP_OOOC | TCMU_MAILBOX_FLAG_CAP_READ_LEN;
	mb.cmdr_off = FT_CMDR_OFF;
	mb.cmdr_size = FT_CMDR_SIZE;
	/* The first 4 bytes say how much the kernel queued; the rest is the ring. */
	memcpy(&head, data, 4);
	mb.cmd_head = head % FT_CMDR_SIZE;
	memcpy(map, &mb, sizeof(mb));
	size -= 4;
	memcpy(map + FT_CMDR_OFF, data + 4, size < FT_CMDR_SIZE ? size : FT_CMDR_SIZE);
	if (tcmu_ring_init(&r, map, sizeof(map)))
		abort();
	/* Bounded: each entry is at least 8 bytes. */
	while (parsed < FT_CMDR_SIZE / 8 && (ret = tcmu_ring_next(&r, &e)) == 1) {
		parsed++;
		if (e.kind != TCMU_RING_CMD)
			continue;
		if (e.bad && (e.iov_cnt || e.cdb_len))
			abort();
		if (e.cdb_len > TCMU_RING_CDB_MAX)
			abort();
		for (i = 0; i < e.iov_cnt; i++) {
			const uint8_t *b = e.iov[i].iov_base;

			if (b < map + FT_CMDR_OFF + FT_CMDR_SIZE || b > map + sizeof(map) ||
			    e.iov[i].iov_len > (size_t)(map + sizeof(map) - b))
				abort();
			if (e.iov[i].iov_len)
				(void)*(volatile const uint8_t *)b;
		}
		open++;
	}
	while (open--)
		if (!tcmu_ring_complete(&r, 1, 2, (const uint8_t *)"\x70\0\x05", 3, UINT32_MAX))
			abort();
	tcmu_ring_skip(&r);
	if (r.tail != r.next)
		abort();
	tcmu_ring_fini(&r);
	return 0;
}
