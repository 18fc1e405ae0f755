// tcmu_ring_test.cc - the TCMU ring (engine/scsi/tcmu_ring.c) on a ring in ordinary memory that a
// fake kernel side (tests/tcmu_ring_shim.c) fills the way queue_cmd_ring() does and reaps the way
// tcmu_handle_completions() does: the mailbox check, the entry parser and its validation of
// every offset, out-of-order completion by slot stealing, the tail over PAD and TMR entries and
// across the ring's end, and completions from several threads at once. Leaves out the uio fd and
// configfs (the VM rig suite, scripts/rig-frontend.sh).
#include <gtest/gtest.h>

#include <errno.h>
#include <string.h>

#include <algorithm>
#include <set>
#include <vector>

#include "engine/scsi/tcmu_ring.h"
#include "tcmu_ring_shim.h"

namespace
{

constexpr uint16_t kV2 = 2;
constexpr uint16_t kOooc = 1;
const uint8_t kRead10[10] = { 0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0 };
const uint8_t kRead16[16] = { 0x88, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0 };
const uint8_t kTur[6] = { 0, 0, 0, 0, 0, 0 };

struct Fake {
	struct tcmu_fake *f = nullptr;
	explicit Fake(uint32_t cmdr = 4096, uint32_t data = 1 << 20, uint16_t version = kV2,
		      uint16_t flags = kOooc | 2)
	{
		EXPECT_EQ(0, tcmu_fake_new(cmdr, data, version, flags, &f));
	}
	~Fake()
	{
		tcmu_fake_delete(f);
	}
	struct tcmu_ring *r()
	{
		return tcmu_fake_ring(f);
	}
};

std::vector<tcmu_fake_done> reap(Fake &k)
{
	std::vector<tcmu_fake_done> d(512);
	int n = tcmu_fake_reap(k.f, d.data(), (int)d.size());
	EXPECT_GE(n, 0);
	d.resize(n < 0 ? 0 : n);
	return d;
}

} // namespace

TEST(tcmu_ring, mailbox_version_and_ooo_completion_are_required)
{
	Fake old(4096, 4096, 1, kOooc);
	EXPECT_EQ(-EPROTO, tcmu_fake_ring_init(old.f));
	Fake in_order(4096, 4096, kV2, 2);
	EXPECT_EQ(-EPROTO, tcmu_fake_ring_init(in_order.f));
	Fake ok;
	EXPECT_EQ(0, tcmu_fake_ring_init(ok.f));
	// A ring that claims more than the mapping holds.
	struct tcmu_ring r;
	EXPECT_EQ(-EINVAL, tcmu_ring_init(&r, tcmu_fake_mem(ok.f), 4096));
}

TEST(tcmu_ring, a_command_is_parsed_with_its_cdb_and_buffers_inside_the_data_area)
{
	Fake k;
	ASSERT_EQ(0, tcmu_fake_ring_init(k.f));
	size_t data_at = 0;
	ASSERT_GE(tcmu_fake_queue_cmd(k.f, 7, kRead10, sizeof(kRead10), 8192, 3, &data_at), 0);
	memset(tcmu_fake_mem(k.f) + data_at, 0xab, 8192);
	auto *e = new tcmu_ring_entry;
	ASSERT_TRUE(tcmu_ring_pending(k.r()));
	ASSERT_EQ(1, tcmu_ring_next(k.r(), e));
	EXPECT_EQ((uint32_t)TCMU_RING_CMD, e->kind);
	EXPECT_FALSE(e->bad);
	EXPECT_EQ(7, e->cmd_id);
	ASSERT_EQ(10u, e->cdb_len);
	EXPECT_EQ(0, memcmp(e->cdb, kRead10, 10));
	ASSERT_EQ(3u, e->iov_cnt);
	size_t total = 0;
	for (uint32_t i = 0; i < e->iov_cnt; i++) {
		uint8_t *b = (uint8_t *)e->iov[i].iov_base;
		EXPECT_EQ(tcmu_fake_mem(k.f) + data_at + total, b);
		EXPECT_EQ(0xab, b[0]);
		total += e->iov[i].iov_len;
	}
	EXPECT_EQ(8192u, total);
	EXPECT_EQ(0, tcmu_ring_next(k.r(), e));
	EXPECT_FALSE(tcmu_ring_pending(k.r()));
	delete e;
}

TEST(tcmu_ring, answers_fill_the_oldest_open_slot_and_the_tail_follows)
{
	Fake k;
	ASSERT_EQ(0, tcmu_fake_ring_init(k.f));
	size_t at;
	int off[3];
	for (int i = 0; i < 3; i++)
		off[i] = tcmu_fake_queue_cmd(k.f, (uint16_t)(10 + i), kTur, 6, 0, 0, &at);
	auto *e = new tcmu_ring_entry;
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(1, tcmu_ring_next(k.r(), e));
	delete e;
	// The last command finishes first: its answer goes into the first slot, and the tail moves
	// over that slot only.
	ASSERT_TRUE(tcmu_ring_complete(k.r(), 12, 0, nullptr, 0, UINT32_MAX));
	EXPECT_EQ((uint32_t)off[1], tcmu_fake_tail(k.f));
	auto d = reap(k);
	ASSERT_EQ(1u, d.size());
	EXPECT_EQ(12, d[0].cmd_id);
	ASSERT_TRUE(tcmu_ring_complete(k.r(), 10, 0, nullptr, 0, UINT32_MAX));
	ASSERT_TRUE(tcmu_ring_complete(k.r(), 11, 0, nullptr, 0, UINT32_MAX));
	d = reap(k);
	ASSERT_EQ(2u, d.size());
	EXPECT_EQ(10, d[0].cmd_id);
	EXPECT_EQ(11, d[1].cmd_id);
	EXPECT_EQ(tcmu_fake_head(k.f), tcmu_fake_tail(k.f));
	// Nothing open: an answer has no slot and the tail stays.
	EXPECT_FALSE(tcmu_ring_complete(k.r(), 13, 0, nullptr, 0, UINT32_MAX));
	EXPECT_EQ(tcmu_fake_head(k.f), tcmu_fake_tail(k.f));
}

TEST(tcmu_ring, a_short_read_and_check_condition_sense_reach_the_kernel)
{
	Fake k;
	ASSERT_EQ(0, tcmu_fake_ring_init(k.f));
	size_t at;
	tcmu_fake_queue_cmd(k.f, 1, kRead16, 16, 4096, 1, &at);
	tcmu_fake_queue_cmd(k.f, 2, kRead16, 16, 4096, 1, &at);
	auto *e = new tcmu_ring_entry;
	ASSERT_EQ(1, tcmu_ring_next(k.r(), e));
	ASSERT_EQ(1, tcmu_ring_next(k.r(), e));
	delete e;
	uint8_t sense[18] = { 0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00 };
	ASSERT_TRUE(tcmu_ring_complete(k.r(), 2, 0x02, sense, sizeof(sense), UINT32_MAX));
	ASSERT_TRUE(tcmu_ring_complete(k.r(), 1, 0x00, nullptr, 0, 512));
	auto d = reap(k);
	ASSERT_EQ(2u, d.size());
	EXPECT_EQ(2, d[0].cmd_id);
	EXPECT_EQ(0x02, d[0].status);
	EXPECT_EQ(0x05, d[0].sense_key);
	EXPECT_EQ(0x21, d[0].asc);
	EXPECT_FALSE(d[0].read_len_set);
	EXPECT_EQ(1, d[1].cmd_id);
	EXPECT_EQ(0x00, d[1].status);
	EXPECT_TRUE(d[1].read_len_set);
	EXPECT_EQ(512u, d[1].read_len);
}

TEST(tcmu_ring, pad_at_the_ring_end_and_tmr_entries_are_passed_over)
{
	// A small ring: entries of 128 bytes (112 + 16-byte CDB) wrap after a few.
	Fake k(1024, 1 << 16);
	ASSERT_EQ(0, tcmu_fake_ring_init(k.f));
	auto *e = new tcmu_ring_entry;
	size_t at;
	uint16_t id = 1;
	int pads = 0, tmrs = 0;
	std::set<uint16_t> answered;
	for (int round = 0; round < 40; round++) {
		if (round % 7 == 3)
			ASSERT_GE(tcmu_fake_queue_tmr(k.f, 1), 0);
		int a = tcmu_fake_queue_cmd(k.f, id, kRead16, 16, 512, 1, &at);
		int b = tcmu_fake_queue_cmd(k.f, (uint16_t)(id + 1), kRead10, 10, 512, 1, &at);
		ASSERT_GE(a, 0) << round;
		ASSERT_GE(b, 0) << round;
		int n;
		while ((n = tcmu_ring_next(k.r(), e)) == 1) {
			pads += e->kind == TCMU_RING_PAD;
			tmrs += e->kind == TCMU_RING_TMR;
		}
		ASSERT_EQ(0, n);
		tcmu_ring_skip(k.r());
		// Out of order, every round.
		ASSERT_TRUE(
		    tcmu_ring_complete(k.r(), (uint16_t)(id + 1), 0, nullptr, 0, UINT32_MAX));
		ASSERT_TRUE(tcmu_ring_complete(k.r(), id, 0, nullptr, 0, UINT32_MAX));
		for (auto &x : reap(k))
			answered.insert(x.cmd_id);
		ASSERT_EQ(tcmu_fake_head(k.f), tcmu_fake_tail(k.f)) << round;
		id = (uint16_t)(id + 2);
	}
	delete e;
	EXPECT_GT(pads, 0);
	EXPECT_GT(tmrs, 0);
	EXPECT_EQ(80u, answered.size());
}

TEST(tcmu_ring, a_tmr_at_the_tail_is_acknowledged_by_the_tail_moving)
{
	Fake k;
	ASSERT_EQ(0, tcmu_fake_ring_init(k.f));
	ASSERT_GE(tcmu_fake_queue_tmr(k.f, 5), 0);
	auto *e = new tcmu_ring_entry;
	ASSERT_EQ(1, tcmu_ring_next(k.r(), e));
	EXPECT_EQ((uint32_t)TCMU_RING_TMR, e->kind);
	delete e;
	EXPECT_EQ(0u, tcmu_fake_tail(k.f));
	EXPECT_TRUE(tcmu_ring_skip(k.r()));
	EXPECT_EQ(tcmu_fake_head(k.f), tcmu_fake_tail(k.f));
	EXPECT_FALSE(tcmu_ring_skip(k.r()));
}

// Entries whose offsets point elsewhere than they must: parsed as bad commands (answered with
// CHECK CONDITION, never dereferenced) or, when the header itself is broken, a stopped ring.
TEST(tcmu_ring, offsets_outside_their_place_make_a_bad_command_not_a_wild_pointer)
{
	Fake k;
	ASSERT_EQ(0, tcmu_fake_ring_init(k.f));
	auto *e = new tcmu_ring_entry;
	size_t at;
	uint8_t *mem = tcmu_fake_mem(k.f);
	// Each case: queue a good command, then spoil one field in the ring.
	struct Case {
		const char *what;
		size_t field; // byte offset in the entry
		uint64_t value;
	} cases[] = {
		{ "iov base in the mailbox", 48, 0 },
		{ "iov base in the ring", 48, 128 },
		{ "iov past the mapping", 48, (uint64_t)tcmu_fake_size(k.f) - 16 },
		{ "iov length wraps", 56, ~0ull },
		{ "cdb before the iovecs", 24, 128 },
		{ "cdb past the entry", 24, 1ull << 40 },
		{ "iov count past the entry", 8, 1000 },
		{ "bidi count past the entry", 12, 0x7fffffff },
	};
	for (auto &c : cases) {
		int off = tcmu_fake_queue_cmd(k.f, 9, kRead10, 10, 4096, 1, &at);
		ASSERT_GE(off, 0);
		uint8_t *ent = mem + 128 + off;
		if (c.field == 8 || c.field == 12) {
			uint32_t v = (uint32_t)c.value;
			memcpy(ent + c.field, &v, 4);
		} else {
			memcpy(ent + c.field, &c.value, 8);
		}
		ASSERT_EQ(1, tcmu_ring_next(k.r(), e)) << c.what;
		EXPECT_EQ((uint32_t)TCMU_RING_CMD, e->kind) << c.what;
		EXPECT_TRUE(e->bad) << c.what;
		EXPECT_EQ(0u, e->iov_cnt) << c.what;
		ASSERT_TRUE(tcmu_ring_complete(k.r(), e->cmd_id, 2, nullptr, 0, UINT32_MAX));
		auto d = reap(k);
		ASSERT_EQ(1u, d.size()) << c.what;
		EXPECT_EQ(9, d[0].cmd_id);
	}
	// A header of length 0, or one longer than what was queued: the ring cannot go on.
	uint8_t zero[16] = {};
	uint32_t len_op = 1; // CMD, length 0
	memcpy(zero, &len_op, 4);
	ASSERT_GE(tcmu_fake_queue_raw(k.f, zero, 16), 0);
	EXPECT_EQ(-EPROTO, tcmu_ring_next(k.r(), e));
	delete e;

	Fake k2;
	ASSERT_EQ(0, tcmu_fake_ring_init(k2.f));
	uint8_t big[16] = {};
	len_op = 512 | 1;
	memcpy(big, &len_op, 4);
	ASSERT_GE(tcmu_fake_queue_raw(k2.f, big, 16), 0);
	auto *e2 = new tcmu_ring_entry;
	EXPECT_EQ(-EPROTO, tcmu_ring_next(k2.r(), e2));
	delete e2;
}

TEST(tcmu_ring, cdb_length_follows_the_operation_code_group)
{
	uint8_t cdb[32] = {};
	const std::pair<uint8_t, uint32_t> groups[] = { { 0x00, 6 },  { 0x28, 10 }, { 0x5a, 10 },
							{ 0xa0, 12 }, { 0x88, 16 }, { 0xc0, 10 },
							{ 0xe0, 10 } };
	for (auto &g : groups) {
		cdb[0] = g.first;
		EXPECT_EQ(g.second, tcmu_ring_cdb_len(cdb, 32)) << std::hex << (int)g.first;
	}
	cdb[0] = 0x7f;
	cdb[7] = 24;
	EXPECT_EQ(32u, tcmu_ring_cdb_len(cdb, 32));
	EXPECT_EQ(0u, tcmu_ring_cdb_len(cdb, 7));
	EXPECT_EQ(0u, tcmu_ring_cdb_len(cdb, 0));
}

TEST(tcmu_ring, many_commands_answered_from_several_threads_at_once)
{
	Fake k(1 << 16, 1 << 20);
	ASSERT_EQ(0, tcmu_fake_ring_init(k.f));
	auto *e = new tcmu_ring_entry;
	size_t at;
	std::vector<uint16_t> ids;
	for (int round = 0; round < 20; round++) {
		ids.clear();
		for (uint16_t i = 1; i <= 200; i++) {
			uint16_t id = (uint16_t)(round * 200 + i);
			ASSERT_GE(tcmu_fake_queue_cmd(k.f, id, kRead10, 10, 512, 1, &at), 0);
			ids.push_back(id);
		}
		for (size_t i = 0; i < ids.size(); i++)
			ASSERT_EQ(1, tcmu_ring_next(k.r(), e));
		std::reverse(ids.begin(), ids.end());
		ASSERT_EQ(0, tcmu_fake_complete_threads(k.f, ids.data(), (uint32_t)ids.size(), 4));
		auto d = reap(k);
		std::set<uint16_t> got;
		for (auto &x : d)
			got.insert(x.cmd_id);
		EXPECT_EQ(200u, d.size());
		EXPECT_EQ(200u, got.size());
		EXPECT_EQ(tcmu_fake_head(k.f), tcmu_fake_tail(k.f));
	}
	delete e;
}
