/*
 * fuzz_tcmu.c - fuzz target for the TCMU ring-entry parser (engine/scsi/tcmu_ring.c): the input
 * is laid out as a device's mapping (a valid mailbox, then the bytes as the command ring, or
 * entries built from them as the kernel builds them, then a data area), cmd_head set from the
 * input, and every queued entry is parsed and answered.
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

/* ft_take - the next input byte, 0 once it is used up. */
static uint8_t ft_take(const uint8_t **d, size_t *n)
{
	uint8_t b = 0;

	if (*n) {
		b = **d;
		(*d)++;
		(*n)--;
	}
	return b;
}

/* ft_build - lay the input out as entries the way queue_cmd_ring() does, each field slightly
 * off now and then, so that a random input reaches the checks behind a well-formed header
 * (raw bytes alone rarely get past it). Returns the head. */
static uint32_t ft_build(uint8_t *map, const uint8_t *d, size_t n)
{
	uint32_t pos = 0;

	while (n && pos + 8 <= FT_CMDR_SIZE) {
		uint8_t b = ft_take(&d, &n), *ent = map + FT_CMDR_OFF + pos;
		uint32_t niov = (b >> 2) & 7, len, base, cdb_len, len_op, v32, i;
		uint64_t v64;
		uint8_t op;

		if ((b & 3) != 1) {
			/* PAD to the end, TMR, or a raw header */
			len = (b & 3) == 0 ? FT_CMDR_SIZE - pos : 8u * (1 + (ft_take(&d, &n) & 15));
			len_op = len | ((b & 3) == 3   ? ft_take(&d, &n) & 7u
					: (b & 3) == 2 ? 2u
						       : 0u);
			if (pos + len > FT_CMDR_SIZE)
				break;
			memcpy(ent, &len_op, 4);
			pos = (pos + len) % FT_CMDR_SIZE;
			if (!pos)
				break;
			continue;
		}
		base = 48 + 16 * niov < 112 ? 112 : 48 + 16 * niov;
		op = ft_take(&d, &n);
		cdb_len = op == 0x7f ? 8 : tcmu_ring_cdb_len(&op, 1);
		len = (base + cdb_len + 7) & ~7u;
		if (pos + len > FT_CMDR_SIZE)
			break;
		len_op = len | 1u;
		if (b & 0x80)
			len_op ^= 8u * (ft_take(&d, &n) & 3); /* a length a little off */
		memcpy(ent, &len_op, 4);
		ent[4] = ft_take(&d, &n);
		v32 = niov + ((b & 0x40) ? ft_take(&d, &n) % 3 : 0);
		memcpy(ent + 8, &v32, 4);
		v64 = FT_CMDR_OFF + pos + base - ((b & 0x20) ? ft_take(&d, &n) % 64 : 0);
		memcpy(ent + 24, &v64, 8);
		ent[base] = op;
		for (i = 0; i < niov; i++) {
			uint64_t off = FT_CMDR_OFF + FT_CMDR_SIZE + 16u * ft_take(&d, &n);
			uint64_t l = 16u * ft_take(&d, &n);

			if (ft_take(&d, &n) == 0xff)
				off -= 256; /* into the ring */
			memcpy(ent + 48 + 16 * i, &off, 8);
			memcpy(ent + 56 + 16 * i, &l, 8);
		}
		pos += len;
	}
	return pos % FT_CMDR_SIZE;
}

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
	/* The first 4 bytes say how much the kernel queued and how the rest is read: as the ring's
	 * bytes, or as entries to lay out (ft_build). */
	memcpy(&head, data, 4);
	size -= 4;
	if (head >> 31) {
		head = ft_build(map, data + 4, size);
	} else {
		memcpy(map + FT_CMDR_OFF, data + 4, size < FT_CMDR_SIZE ? size : FT_CMDR_SIZE);
		head %= FT_CMDR_SIZE;
	}
	mb.cmd_head = head;
	memcpy(map, &mb, sizeof(mb));
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
