// bgdestage_test.cc - the background destage from a watermark (engine/bgdestage.c), on a shm
// cluster: with it on, writes that exceed the log many times over meet a full log less often
// than with it off, the destage thread ran, and every block reads back right on every node.
#include <gtest/gtest.h>

#include "bgdestage.h"

static void bg_expect_common(const bg_result &r, uint32_t nodes)
{
	EXPECT_TRUE(r.bad_attr_refused);
	EXPECT_EQ(r.bad_reads, 0u);
	for (uint32_t i = 0; i < nodes; i++) {
		SCOPED_TRACE(i);
		EXPECT_GE(r.appends[i], r.blocks_written);
		// More written than the log holds (a record is a block and a 64-byte header).
		EXPECT_GT((uint64_t)r.blocks_written * (4096 + 64), r.log_size[i]);
	}
}

static void bg_compare(uint32_t nodes)
{
	bg_result on = {}, off = {};

	// configure, run: the same writes with the background destage off, then on
	ASSERT_EQ(bg_run(nodes, false, &off), 0);
	ASSERT_EQ(bg_run(nodes, true, &on), 0);
	// verify
	bg_expect_common(off, nodes);
	bg_expect_common(on, nodes);
	for (uint32_t i = 0; i < nodes; i++) {
		SCOPED_TRACE(i);
		printf("node %u: off: %llu full-log stalls; on: %llu, %llu background destages of "
		       "%llu blocks\n",
		       i, (unsigned long long)off.backpressure[i],
		       (unsigned long long)on.backpressure[i],
		       (unsigned long long)on.bg_destages[i], (unsigned long long)on.bg_blocks[i]);
		EXPECT_EQ(off.bg_destages[i], 0u);
		EXPECT_GT(off.backpressure[i], 0u);
		EXPECT_GT(on.bg_destages[i], 0u);
		EXPECT_GT(on.bg_blocks[i], 0u);
		EXPECT_LT(on.backpressure[i], off.backpressure[i]);
	}
}

TEST(bgdestage, log_past_watermark__destaged_in_background_two_nodes)
{
	bg_compare(2);
}

TEST(bgdestage, log_past_watermark__destaged_in_background_three_nodes)
{
	bg_compare(3);
}
