// rlog_test.cc - unit tests of the replication log's record format and of the scan a survivor
// runs over a dead writer's region (label unit): checksums, retired records, wrap, a corrupt
// record in the middle (skipped, never replayed, the rest still found), a torn append at the
// end (never acknowledged, left out), and step slots. Then the writer against real peers (node
// processes, rlog_scenarios.c): an append that fails part way leaves nothing live.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

extern "C" {
#include "engine/rlog.h"
}
#include "rlog_scenarios.h"

namespace
{

constexpr uint32_t BS = 4096;

struct region {
	std::vector<uint8_t> mem;
	uint64_t off = RLOG_RING, lsn = 1;

	explicit region(size_t len) : mem(len, 0)
	{
		rlog_region_hdr_encode(mem.data(), 7, 1, RLOG_RING, 1);
	}
	// append a DATA record for @lba whose block is filled with @fill; returns its offset
	uint64_t put(uint64_t lba, uint8_t fill, bool retired = false, uint64_t state = 0)
	{
		std::vector<uint8_t> block(BS, fill);
		rlog_rec r = {};

		r.lsn = lsn++;
		r.writer = 7;
		r.type = RLOG_DATA;
		r.addr = lba;
		r.len = BS;
		r.gen = 1;
		r.state = retired ? RLOG_RETIRED : state;
		if (off + rlog_rec_size(BS) > mem.size()) {
			rlog_rec w = {};

			w.lsn = r.lsn;
			w.writer = 7;
			w.type = RLOG_WRAP;
			w.gen = 1;
			rlog_rec_encode(&mem[off], &w, nullptr);
			off = RLOG_RING;
			r.lsn = lsn++;
		}
		uint64_t at = off;
		rlog_rec_encode(&mem[off], &r, block.data());
		off += rlog_rec_size(BS);
		return at;
	}
};

struct visited {
	std::vector<uint64_t> lbas;
	std::vector<uint8_t> fills;
};

int visit(void *arg, const rlog_rec *r, const uint8_t *payload)
{
	auto *v = static_cast<visited *>(arg);

	v->lbas.push_back(r->addr);
	v->fills.push_back(payload[0]);
	return 0;
}

} // namespace

TEST(rlog, record_round_trip_and_checksum)
{
	std::vector<uint8_t> buf(rlog_rec_size(BS)), block(BS, 0x5a);
	rlog_rec r = {}, d = {};

	r.lsn = 42;
	r.writer = 3;
	r.type = RLOG_DATA;
	r.addr = 9;
	r.len = BS;
	r.gen = 2;
	rlog_rec_encode(buf.data(), &r, block.data());
	ASSERT_EQ(rlog_rec_decode(buf.data(), buf.size(), &d), 0);
	EXPECT_EQ(d.lsn, 42u);
	EXPECT_EQ(d.addr, 9u);
	EXPECT_EQ(d.state, 0u);
	// retiring flips the state word in place: still valid
	uint64_t retired = RLOG_RETIRED;
	memcpy(&buf[56], &retired, 8);
	ASSERT_EQ(rlog_rec_decode(buf.data(), buf.size(), &d), 0);
	EXPECT_EQ(d.state, RLOG_RETIRED);
	// one bit of the payload: the checksum fails
	buf[64 + 100] ^= 1;
	EXPECT_EQ(rlog_rec_decode(buf.data(), buf.size(), &d), -EBADMSG);
	// too short to hold its payload
	EXPECT_EQ(rlog_rec_decode(buf.data(), 100, &d), -EPROTO);
	EXPECT_EQ(rlog_rec_decode(buf.data(), 10, &d), -ENODATA);
}

TEST(rlog, scan_visits_live_records_in_order_across_a_wrap)
{
	region g(RLOG_RING + 5 * rlog_rec_size(BS));
	visited v;
	rlog_scan_stats st;

	for (int i = 0; i < 4; i++)
		g.put(100 + i, (uint8_t)i, i == 1);
	// make room at the start as a writer would (tail past the first two), then wrap
	rlog_region_hdr_encode(g.mem.data(), 7, 1, RLOG_RING + 2 * rlog_rec_size(BS), 3);
	g.put(200, 9); // the WRAP record, then this at the start
	ASSERT_EQ(rlog_scan(g.mem.data(), g.mem.size(), 7, visit, &v, &st), 0);
	EXPECT_EQ(v.lbas, (std::vector<uint64_t>{ 102, 103, 200 }));
	EXPECT_EQ(st.live, 3u);
	EXPECT_EQ(st.corrupt, 0u);
	EXPECT_EQ(st.torn, 0u);
}

// A rewrite does not retire the record it supersedes: the scan keeps only the newest record of
// each block, so a replay never writes the older data over it, nor over what a destage of the
// newer one wrote (the newest retired: nothing of that block is replayed).
TEST(rlog, superseded_record_is_resolved_by_sequence)
{
	region g(RLOG_RING + 8 * rlog_rec_size(BS));
	visited v;
	rlog_scan_stats st;

	g.put(5, 1);	   // block 5, first write
	g.put(6, 2);	   // block 6
	g.put(5, 3);	   // block 5 rewritten: the first is superseded, still live on the peer
	g.put(6, 4, true); // block 6 rewritten, and that destaged: nothing of 6 to replay
	ASSERT_EQ(rlog_scan(g.mem.data(), g.mem.size(), 7, visit, &v, &st), 0);
	EXPECT_EQ(v.lbas, (std::vector<uint64_t>{ 5 }));
	EXPECT_EQ(v.fills, (std::vector<uint8_t>{ 3 }));
	EXPECT_EQ(st.live, 1u);
	EXPECT_EQ(st.superseded, 2u);
	EXPECT_EQ(st.retired, 1u);
}

// An append that failed is marked abandoned where it landed: it was never acknowledged, so it
// supersedes nothing, and the acknowledged record before it is still replayed.
TEST(rlog, abandoned_record_supersedes_nothing)
{
	region g(RLOG_RING + 8 * rlog_rec_size(BS));
	visited v;
	rlog_scan_stats st;

	g.put(5, 1);
	g.put(5, 2, false, RLOG_ABANDONED);
	ASSERT_EQ(rlog_scan(g.mem.data(), g.mem.size(), 7, visit, &v, &st), 0);
	EXPECT_EQ(v.lbas, (std::vector<uint64_t>{ 5 }));
	EXPECT_EQ(v.fills, (std::vector<uint8_t>{ 1 }));
	EXPECT_EQ(st.abandoned, 1u);
	EXPECT_EQ(st.superseded, 0u);
	// an unknown state word is a bad record, not a live one
	region h(RLOG_RING + 8 * rlog_rec_size(BS));
	visited w;
	h.put(5, 1);
	h.put(5, 2, false, 0x1234);
	ASSERT_EQ(rlog_scan(h.mem.data(), h.mem.size(), 7, visit, &w, &st), 0);
	EXPECT_EQ(w.fills, (std::vector<uint8_t>{ 1 }));
}

TEST(rlog, corrupt_record_is_skipped_and_counted_never_replayed)
{
	region g(RLOG_RING + 8 * rlog_rec_size(BS));
	visited v;
	rlog_scan_stats st;
	uint64_t bad;

	g.put(1, 1);
	bad = g.put(2, 2);
	g.put(3, 3);
	g.mem[bad + 64 + 7] ^= 0x40; // a flipped bit in the middle record's block
	ASSERT_EQ(rlog_scan(g.mem.data(), g.mem.size(), 7, visit, &v, &st), 0);
	EXPECT_EQ(v.lbas, (std::vector<uint64_t>{ 1, 3 }));
	EXPECT_EQ(st.corrupt, 1u);
}

TEST(rlog, torn_append_at_the_end_is_left_out)
{
	region g(RLOG_RING + 8 * rlog_rec_size(BS));
	visited v;
	rlog_scan_stats st;
	uint64_t last;

	g.put(1, 1);
	last = g.put(2, 2);
	// the writer died while the last record's block was landing
	memset(&g.mem[last + 64 + 2048], 0, 2048);
	ASSERT_EQ(rlog_scan(g.mem.data(), g.mem.size(), 7, visit, &v, &st), 0);
	EXPECT_EQ(v.lbas, (std::vector<uint64_t>{ 1 }));
	EXPECT_EQ(st.torn, 1u);
	EXPECT_EQ(st.corrupt, 0u);
}

TEST(rlog, foreign_or_bad_region_header_is_refused)
{
	region g(RLOG_RING + 4 * rlog_rec_size(BS));
	rlog_scan_stats st;

	g.put(1, 1);
	EXPECT_EQ(rlog_scan(g.mem.data(), g.mem.size(), 8, visit, nullptr, &st), -EPROTO);
	g.mem[3] ^= 1;
	EXPECT_EQ(rlog_scan(g.mem.data(), g.mem.size(), 7, visit, nullptr, &st), -EPROTO);
	std::vector<uint8_t> zero(RLOG_RING + 4 * rlog_rec_size(BS), 0);
	EXPECT_EQ(rlog_scan(zero.data(), zero.size(), 7, visit, nullptr, &st), 0);
	EXPECT_EQ(st.live, 0u);
}

TEST(rlog, append_that_loses_a_peer__retired_where_it_landed)
{
	EXPECT_EQ(conf_run("rlog_partial_append", 3, sc_rlog_partial_append, 1u << 2, 60), 0);
}

TEST(rlog, rewrite_destage_and_corruption_against_a_peer)
{
	EXPECT_EQ(conf_run("rlog_rewrite", 2, sc_rlog_rewrite, 0, 60), 0);
}

TEST(rlog, write_not_installed__its_records_and_what_they_superseded_abandoned)
{
	EXPECT_EQ(conf_run("rlog_write_undo", 2, sc_rlog_write_undo, 0, 60), 0);
}

TEST(rlog, a_failed_batch_keeps_its_retirements_until_a_flush_works)
{
	EXPECT_EQ(conf_run("rlog_retire_kept", 2, sc_rlog_retire_kept, 0, 60), 0);
}

TEST(rlog, concurrent_appends_share_one_round_trip)
{
	EXPECT_EQ(conf_run("rlog_group_commit", 2, sc_rlog_group_commit, 0, 60), 0);
}
