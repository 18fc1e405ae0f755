// takeover_test.cc - googletest driver of the crash trials (ctest label "takeover"): a node
// SIGKILLed at each instrumented point of a write's life, and at random points, with the
// survivors' state checked after each (see takeover.h). COHORT_TAKEOVER_TRIALS sets the number of
// randomized trials (default 20; CI runs 200); COHORT_TAKEOVER_SEED moves their seeds, and
// COHORT_TAKEOVER_FIRST skips the trials before it (to run a failing one again).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "cohort/node.h"
#include "takeover.h"

namespace
{

tk_trial base_trial(uint64_t seed)
{
	tk_trial t = {};

	t.nodes = 3;
	t.victim = 1;
	t.crash_point = COH_CRASH_NONE;
	t.crash_after = 1;
	t.kill_at_op = 30;
	t.ops = 80;
	t.replicas = 1;
	t.raid_level = 5;
	t.seed = seed;
	t.log_kib = 64;
	return t;
}

uint64_t env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, nullptr, 0) : def;
}

} // namespace

TEST(takeover, no_failure__consistent_and_linearizable)
{
	tk_trial t = base_trial(1);
	tk_result r;

	t.victim = 99;
	ASSERT_EQ(tk_run(&t, &r), 0);
	EXPECT_GT(r.acked_writes, 0u);
	EXPECT_EQ(r.takeovers, 0u);
}

// Each instrumented point, with the victim rotating, several times each.
TEST(takeover, each_crash_point__acknowledged_writes_survive)
{
	for (uint32_t pt = COH_CRASH_BEFORE_REPLICATION; pt < COH_CRASH_WRITE_PATH_MAX; pt++) {
		for (uint32_t rep = 0; rep < 3; rep++) {
			tk_trial t = base_trial(100 + pt * 10 + rep);
			tk_result r;

			t.victim = (pt + rep) % 3;
			t.crash_point = pt;
			t.crash_after = 1 + rep * 3;
			SCOPED_TRACE("crash point " + std::to_string(pt) + " after " +
				     std::to_string(t.crash_after) + " victim " +
				     std::to_string(t.victim));
			ASSERT_EQ(tk_run(&t, &r), 0);
			EXPECT_TRUE(r.victim_died);
			// Exactly one survivor took the dead node's log over.
			EXPECT_EQ(r.takeovers, 1u);
			EXPECT_GE(r.epoch, 2u);
		}
	}
}

// A log of a few records: writes wait for destages (back-pressure), nothing is dropped.
TEST(takeover, full_log__back_pressure_not_loss)
{
	tk_trial t = base_trial(7);
	tk_result r;

	t.log_kib = 32;
	t.victim = 2;
	t.crash_point = COH_CRASH_REPLICATED;
	t.crash_after = 20;
	ASSERT_EQ(tk_run(&t, &r), 0);
	EXPECT_GT(r.backpressure, 0u);
}

TEST(takeover, raid1_and_two_replicas)
{
	tk_trial t = base_trial(11);
	tk_result r;

	t.raid_level = 1;
	t.crash_point = COH_CRASH_DESTAGE_DATA;
	t.crash_after = 2;
	ASSERT_EQ(tk_run(&t, &r), 0);
	t = base_trial(12);
	t.nodes = 4;
	t.replicas = 2;
	t.crash_point = COH_CRASH_REPLICATED;
	t.crash_after = 5;
	ASSERT_EQ(tk_run(&t, &r), 0);
	EXPECT_EQ(r.takeovers, 1u);
}

TEST(takeover, held_takeover__other_resources_go_on)
{
	ASSERT_EQ(tk_hold_run(), 0);
}

TEST(takeover, randomized_trials)
{
	uint64_t trials = env_u64("COHORT_TAKEOVER_TRIALS", 20),
		 seed0 = env_u64("COHORT_TAKEOVER_SEED", 1000);
	uint64_t s = seed0 * 0x9e3779b97f4a7c15ull + 1, first = env_u64("COHORT_TAKEOVER_FIRST", 0);

	for (uint64_t i = 0; i < trials; i++) {
		tk_trial t = base_trial(seed0 + i);
		tk_result r;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		t.nodes = 3 + (uint32_t)(s % 2);
		t.victim = (uint32_t)(s >> 8) % t.nodes;
		t.crash_point = (uint32_t)(s >> 16) % COH_CRASH_WRITE_PATH_MAX;
		t.crash_after = 1 + (uint32_t)(s >> 24) % 12;
		t.kill_at_op = (uint32_t)(s >> 32) % t.ops;
		t.raid_level = (s >> 40) % 4 ? 5 : 1;
		if (i < first)
			continue; /* to run one failing trial again */
		SCOPED_TRACE("trial " + std::to_string(i) + " seed " + std::to_string(t.seed) +
			     " nodes " + std::to_string(t.nodes) + " victim " +
			     std::to_string(t.victim) + " point " + std::to_string(t.crash_point) +
			     " after " + std::to_string(t.crash_after));
		ASSERT_EQ(tk_run(&t, &r), 0);
		EXPECT_TRUE(r.victim_died);
	}
}
