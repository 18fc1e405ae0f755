/*
 * fuzz_engine.c - fuzz target for what the engine parses from peers and from persistent memory:
 * control messages, replication log records, step slots and whole log regions (a survivor scans
 * a dead node's region, which may hold anything after a crash or corruption). Built with
 * libFuzzer when the compiler has it (COHORT_FUZZ), and always with fuzz_driver.c, a bounded
 * random driver that ctest runs.
 * Properties: nothing crashes or reads out of bounds; a message or record that decodes
 * re-encodes to the same bytes; a scan visits only records whose checksum holds, in increasing
 * LSN order, each inside the region.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/log.h"
#include "engine/node_internal.h"
#include "engine/rlog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	const uint8_t *lo, *hi;
	uint64_t last;
};

static void quiet(void *ctx, enum coh_log_level level, const char *func, int line, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)func;
	(void)line;
	(void)msg;
}

static int visit(void *arg, const struct rlog_rec *r, const uint8_t *payload)
{
	struct seen *s = arg;

	if (r->lsn <= s->last || payload < s->lo || payload + r->len > s->hi)
		abort();
	s->last = r->lsn;
	return 0;
}

static int visit_step(void *arg, uint64_t stripe, uint8_t step)
{
	(void)arg;
	(void)stripe;
	(void)step;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t region[RLOG_RING + 8 * 4160 + 64];
	struct ctl_msg m;
	struct rlog_rec r;
	uint8_t again[8192];

	coh_log_set_sink(quiet, NULL); /* corrupt records are expected here, and logged */

	if (size >= CTL_MSG_SIZE && ctl_decode(data, CTL_MSG_SIZE, 8, &m) == 0) {
		ctl_encode(&m, again);
		if (memcmp(again, data, CTL_MSG_SIZE))
			abort();
	}
	if (rlog_rec_decode(data, size, &r) == 0) {
		uint32_t n = rlog_rec_size(r.len);

		if (n > size || n > sizeof(again))
			abort();
		rlog_rec_encode(again, &r, data + RLOG_ALIGN);
		if (memcmp(again, data, n))
			abort();
	}
	if (size >= RLOG_ALIGN) {
		uint16_t w;
		uint32_t gen;
		uint64_t stripe, a, b;
		uint8_t step;

		(void)rlog_step_decode(data, &w, &gen, &stripe, &step);
		(void)rlog_region_hdr_decode(data, &w, &gen, &a, &b);
	}
	/* A whole region: the input over a valid header, so that the scan goes past it. */
	{
		struct rlog_scan_stats st;
		struct seen s = { .lo = region, .hi = region + sizeof(region) };
		size_t n = size < sizeof(region) - RLOG_HDR ? size : sizeof(region) - RLOG_HDR;
		uint64_t tail = RLOG_RING;

		memset(region, 0, sizeof(region));
		if (size >= 2)
			tail = RLOG_RING + (uint64_t)(data[0] % 8) * RLOG_ALIGN;
		rlog_region_hdr_encode(region, 3, size ? data[size - 1] % 3 : 0, tail, 1);
		memcpy(region + RLOG_HDR, data, n);
		(void)rlog_scan(region, sizeof(region), 3, visit, &s, &st);
		(void)rlog_scan_steps(region, sizeof(region), 3, visit_step, NULL);
	}
	/* Structured: valid records built from the input, then some bytes changed. Without
	 * changes the scan must find exactly the live records; with them, it must never visit a
	 * record whose bytes changed (the checksum) and must stay in bounds. */
	if (size >= 4) {
		struct rlog_scan_stats st;
		struct seen sn = { .lo = region, .hi = region + sizeof(region) };
		/* as many as the region can hold (records are at least RLOG_ALIGN bytes) */
		static uint64_t lives[sizeof(region) / RLOG_ALIGN];
		static uint8_t addr_of[sizeof(region) / RLOG_ALIGN];
		uint64_t off = RLOG_RING, lsn = 1, live = 0, newest[256] = { 0 };
		size_t pos = 1, flips = data[0] % 4, k, nl = 0;
		static const uint8_t zero[300];

		memset(region, 0, sizeof(region));
		rlog_region_hdr_encode(region, 3, 1, RLOG_RING, 1);
		while (pos + 1 < size) {
			struct rlog_rec rec = { .lsn = lsn++,
						.writer = 3,
						.type = RLOG_DATA,
						.addr = data[pos],
						.len = (uint32_t)(data[pos + 1] % 3) * 100,
						.gen = 1,
						.state = data[pos + 1] & 4   ? RLOG_RETIRED
							 : data[pos + 1] & 8 ? RLOG_ABANDONED
									     : 0 };

			if (off + rlog_rec_size(rec.len) > sizeof(region))
				break;
			rlog_rec_encode(region + off, &rec, zero);
			off += rlog_rec_size(rec.len);
			/* Expected: the live records that are the newest non-abandoned record of
			 * their block. */
			if (rec.state != RLOG_ABANDONED)
				newest[data[pos]] = rec.lsn;
			if (!rec.state && nl < sizeof(lives) / sizeof(lives[0])) {
				lives[nl] = rec.lsn;
				addr_of[nl++] = data[pos];
			}
			pos += 2;
		}
		for (k = 0; k < nl; k++)
			live += newest[addr_of[k]] == lives[k];
		for (k = 0; k < flips && pos + 1 < size; k++, pos += 2)
			region[RLOG_RING + (data[pos] * 37u) % (off - RLOG_RING + 1)] ^=
			    data[pos + 1] | 1;
		if (rlog_scan(region, sizeof(region), 3, visit, &sn, &st))
			abort();
		if (!flips && (st.live != live || st.corrupt || st.torn))
			abort();
	}
	return 0;
}
