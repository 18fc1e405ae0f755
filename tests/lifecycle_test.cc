// lifecycle_test.cc - googletest driver of the two-life trials (ctest label "takeover"): a whole
// cluster SIGKILLed at random moments and right after a node reached each crash point, then
// opened again on the same files; nothing acknowledged may be lost (lifecycle.h).
// COHORT_LIFECYCLE_TRIALS sets the number of randomized whole-cluster trials (default 20; CI runs
// 200), COHORT_LIFECYCLE_REJOIN_TRIALS the randomized rejoin trials (default 2; CI runs 20), and
// COHORT_LIFECYCLE_SEED their first seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cohort/node.h"
#include "conf.h"
#include "lifecycle.h"

namespace
{

lc_trial base(uint64_t seed)
{
	lc_trial t = {};

	t.nodes = 3;
	t.replicas = 1;
	t.raid_level = 5;
	t.ops = 120;
	t.seed = seed;
	t.end = LC_CRASH_ALL;
	t.crash_node = 99;
	t.kill_after_ops = 60;
	t.log_kib = 64;
	return t;
}

uint64_t env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, nullptr, 0) : def;
}

} // namespace

TEST(lifecycle, whole_cluster_crash__acknowledged_writes_survive_a_restart)
{
	uint64_t replayed = 0;

	// Each trial must keep every acknowledged write. The kill can land just after a
	// destage of everything (a full log is reclaimed by one), leaving nothing to replay:
	// so up to three trials, of which one at least must replay some.
	for (uint64_t seed = 1; seed <= 3 && !replayed; seed++) {
		lc_trial t = base(seed);
		lc_result r;

		ASSERT_EQ(lc_run(&t, &r), 0);
		EXPECT_GT(r.acked_writes, 0u);
		replayed = r.recovered_blocks;
	}
	// Writes were acknowledged and not all destaged: the second life replayed some.
	EXPECT_GT(replayed, 0u);
}

TEST(lifecycle, whole_cluster_crash__at_each_crash_point)
{
	for (uint32_t pt = COH_CRASH_BEFORE_REPLICATION; pt < COH_CRASH_VIEW_FIRST; pt++) {
		lc_trial t = base(200 + pt);
		lc_result r;

		t.crash_node = pt % 3;
		t.crash_point = pt;
		t.crash_after = 1 + pt % 4;
		t.kill_after_ops = t.ops; // the crash point comes first, or everyone at the end
		SCOPED_TRACE("crash point " + std::to_string(pt));
		ASSERT_EQ(lc_run(&t, &r), 0);
	}
}

// A node dies at each crash point, and the rest of the cluster dies a little later (0.3, 2 or
// 10 ms, in turn), while the survivors' view change is under way (it begins at once on shm): a
// log moving off the dead peer, locks taken over, replays. Nothing acknowledged may be lost
// across the restart.
TEST(lifecycle, whole_cluster_crash__during_the_view_change_after_a_death)
{
	const uint32_t gaps_us[] = { 300, 2000, 10000 };

	// One gap per point, in turn (each trial is seconds on rdma under TCG, and the rig's
	// lifecycle suite has a bound); the randomized trials vary it further.
	for (uint32_t pt = COH_CRASH_BEFORE_REPLICATION; pt < COH_CRASH_VIEW_FIRST; pt++) {
		uint32_t g = pt % (sizeof(gaps_us) / sizeof(gaps_us[0]));
		lc_trial t = base(700 + pt * 8 + g);
		lc_result r;

		t.crash_node = (pt + g) % 3;
		t.crash_point = pt;
		t.crash_after = 1 + (pt + g) % 4;
		t.kill_after_ops = t.ops;
		t.death_gap_us = gaps_us[g];
		SCOPED_TRACE("crash point " + std::to_string(pt) + " gap " +
			     std::to_string(gaps_us[g]) + " us");
		ASSERT_EQ(lc_run(&t, &r), 0);
	}
}

TEST(lifecycle, whole_cluster_crash__randomized)
{
	uint64_t trials = env_u64("COHORT_LIFECYCLE_TRIALS", 20),
		 seed0 = env_u64("COHORT_LIFECYCLE_SEED", 3000),
		 s = seed0 * 0x9e3779b97f4a7c15ull + 1;

	for (uint64_t i = 0; i < trials; i++) {
		lc_trial t = base(seed0 + i);
		lc_result r;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		t.nodes = 3 + (uint32_t)(s % 3);
		t.replicas = 1 + (uint32_t)(s >> 8) % 2;
		t.raid_level = (s >> 12) % 4 ? 5 : 1;
		t.kill_after_ops = 1 + (uint32_t)(s >> 16) % t.ops;
		if ((s >> 24) % 2) {
			t.crash_node = (uint32_t)(s >> 28) % t.nodes;
			t.crash_point = 1 + (uint32_t)(s >> 32) % (COH_CRASH_VIEW_FIRST - 1);
			t.crash_after = 1 + (uint32_t)(s >> 40) % 8;
			/* Half the time the others die during the survivors' view change. */
			if ((s >> 48) % 2)
				t.death_gap_us = (uint32_t)(s >> 49) % 20000;
		}
		SCOPED_TRACE(
		    "trial " + std::to_string(i) + " seed " + std::to_string(t.seed) + " nodes " +
		    std::to_string(t.nodes) + " k " + std::to_string(t.replicas) + " kill after " +
		    std::to_string(t.kill_after_ops) + " crash node " +
		    std::to_string(t.crash_node) + " point " + std::to_string(t.crash_point) +
		    " gap " + std::to_string(t.death_gap_us) + " us");
		ASSERT_EQ(lc_run(&t, &r), 0);
	}
}

// Every node closes, one after another, in every order: the element files are complete after
// the last close (the next life replays nothing) and every acknowledged write is there.
static void close_orders(uint32_t nodes)
{
	uint32_t order[5] = { 0, 1, 2, 3, 4 };
	uint32_t trial = 0;

	do {
		lc_trial t = base(500 + trial++);
		lc_result r;

		t.nodes = nodes;
		t.end = LC_CLOSE;
		t.ops = 80;
		for (uint32_t i = 0; i < nodes; i++)
			t.order[i] = order[i];
		std::string o;
		for (uint32_t i = 0; i < nodes; i++)
			o += std::to_string(order[i]);
		SCOPED_TRACE("close order " + o);
		ASSERT_EQ(lc_run(&t, &r), 0);
		EXPECT_EQ(r.recovered_blocks, 0u)
		    << "the closes left acknowledged writes undestaged";
	} while (std::next_permutation(order, order + nodes));
}

TEST(lifecycle, rolling_shutdown__3_nodes_every_order)
{
	close_orders(3);
}

TEST(lifecycle, rolling_shutdown__4_nodes_every_order)
{
	close_orders(4);
}

// A 3-node cluster, k = 1: ten successive single-node deaths, each followed by the node's
// restart and admission, with I/O from every node throughout.
TEST(lifecycle, kill_restart_rejoin__ten_rounds)
{
	lc_rejoin t = {};
	lc_rejoin_result r;

	t.nodes = 3;
	t.replicas = 1;
	t.rounds = 10;
	t.seed = 41;
	ASSERT_EQ(lc_rejoin_run(&t, &r), 0);
	EXPECT_GT(r.acked_writes, 0u);
}

// Two nodes of five killed and restarted at once (k = 2), round after round.
TEST(lifecycle, two_restarted_at_once)
{
	lc_rejoin t = {};
	lc_rejoin_result r;

	t.nodes = 5;
	t.replicas = 2;
	t.rounds = 4;
	t.seed = 43;
	t.kill_two = true;
	ASSERT_EQ(lc_rejoin_run(&t, &r), 0);
}

// A majority lost and regained: three nodes of five killed at once; the two survivors, still
// connected to each other, stop serving; the three restart and the five form again (twice,
// different nodes). The history of every incarnation is linearizable. shm only for now: on rdma
// under TCG the formations of five that follow time out one after the other (docs/recovery.md,
// "Limits": the open finding on rdma); it passed there 3 times alone and failed once in the suite.
TEST(lifecycle, majority_lost_and_regained)
{
	lc_rejoin t = {};
	lc_rejoin_result r;

	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP()
		    << "on rdma under TCG the formations of five after three restarts time out "
		       "(docs/recovery.md, Limits)";
	t.nodes = 5;
	t.replicas = 1;
	t.rounds = 2;
	t.seed = 47;
	t.kill_majority = true;
	ASSERT_EQ(lc_rejoin_run(&t, &r), 0);
	EXPECT_GT(r.acked_writes, 0u);
}

// Random rejoin trials (COHORT_LIFECYCLE_REJOIN_TRIALS, default 2; the soak runs many): 3 to 5
// nodes, k of 1 or 2, 2 to 4 rounds of kill and restart, one node or two at once, restarted
// after the others excluded it or at once, during their view change.
TEST(lifecycle, rejoin__randomized)
{
	uint64_t trials = env_u64("COHORT_LIFECYCLE_REJOIN_TRIALS", 2),
		 seed0 = env_u64("COHORT_LIFECYCLE_SEED", 3000),
		 s = seed0 * 0xbf58476d1ce4e5b9ull + 7, acked = 0, formations = 0;

	for (uint64_t i = 0; i < trials; i++) {
		lc_rejoin t = {};
		lc_rejoin_result r;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		t.nodes = 3 + (uint32_t)(s % 3);
		// Two at once need a majority of the rest: five nodes, and then k = 2 keeps a copy.
		t.kill_two = t.nodes == 5 && (s >> 8) % 2;
		t.replicas = t.kill_two ? 2 : 1 + (uint32_t)(s >> 12) % 2;
		if (t.replicas + 1 >= t.nodes)
			t.replicas = 1;
		t.rounds = 2 + (uint32_t)(s >> 16) % 3;
		t.restart_in_view_change = !t.kill_two && (s >> 24) % 3 == 0;
		t.seed = seed0 + i;
		SCOPED_TRACE("rejoin trial " + std::to_string(i) + " seed " +
			     std::to_string(t.seed) + " nodes " + std::to_string(t.nodes) + " k " +
			     std::to_string(t.replicas) + " rounds " + std::to_string(t.rounds) +
			     (t.kill_two ? " two at once" : "") +
			     (t.restart_in_view_change ? " restarted in the view change" : "") +
			     "; alone: COHORT_LIFECYCLE_SEED=" + std::to_string(seed0) +
			     " COHORT_LIFECYCLE_REJOIN_TRIALS=" + std::to_string(i + 1));
		ASSERT_EQ(lc_rejoin_run(&t, &r), 0);
		EXPECT_GT(r.acked_writes, 0u);
		EXPECT_GE(r.formations, (uint64_t)t.rounds);
		acked += r.acked_writes;
		formations += r.formations;
	}
	printf("rejoin-mix: %llu trials, %llu acknowledged writes, %llu formations\n",
	       (unsigned long long)trials, (unsigned long long)acked,
	       (unsigned long long)formations);
}

// The victim restarts at once, before the others have excluded it: it comes back while the
// view change runs.
TEST(lifecycle, restart_during_the_view_change)
{
	lc_rejoin t = {};
	lc_rejoin_result r;

	t.nodes = 3;
	t.replicas = 1;
	t.rounds = 4;
	t.seed = 47;
	t.restart_in_view_change = true;
	ASSERT_EQ(lc_rejoin_run(&t, &r), 0);
}

// Nodes start in any order, seconds apart: the first two form a cluster once they are a majority
// (after a grace of one timeout for the third), and the last joins it later.
TEST(lifecycle, start_in_any_order__the_late_node_joins)
{
	lc_trial t = base(61);
	lc_result r;

	t.end = LC_CLOSE;
	t.order[0] = 0;
	t.order[1] = 1;
	t.order[2] = 2;
	t.start_gap_ms = 3000;
	ASSERT_EQ(lc_run(&t, &r), 0);
}

// After a crash, node 2 may hold the only copy of node 1's acknowledged writes (k = 1: node 1's
// log is on node 2): nodes 0 and 1 alone wait for it (their open times out), then all three
// recover everything.
TEST(lifecycle, restart_without_a_log_host__the_cluster_waits)
{
	lc_trial t = base(67);
	lc_result r;

	t.absent = 1u << 2;
	ASSERT_EQ(lc_run(&t, &r), 0);
	EXPECT_GT(r.acked_writes, 0u);
}

// The same, forced open: the two nodes serve without node 2 (and log what may be lost).
TEST(lifecycle, restart_without_a_log_host__forced_open)
{
	lc_trial t = base(71);
	lc_result r;

	t.absent = 1u << 2;
	t.force = true;
	ASSERT_EQ(lc_run(&t, &r), 0);
}

// An ordered stop of the whole cluster from one node: every member destages and stops, I/O is
// refused afterwards, and the next start has nothing to recover.
TEST(lifecycle, cluster_stop__elements_complete)
{
	for (uint32_t from = 0; from < 3; from++) {
		lc_trial t = base(80 + from);
		lc_result r;

		t.end = LC_STOP;
		t.order[0] = from;
		t.order[1] = (from + 1) % 3;
		t.order[2] = (from + 2) % 3;
		SCOPED_TRACE("stopped from node " + std::to_string(from));
		ASSERT_EQ(lc_run(&t, &r), 0);
		EXPECT_EQ(r.recovered_blocks, 0u);
	}
}

// Damaged files at a restart: a cut or corrupt log copy (k = 2: the other copy is whole) is found
// by its checksums, reported, and nothing acknowledged is lost; a cut element file is refused.
TEST(lifecycle, damaged_files_at_restart)
{
	for (uint32_t d = LC_TRUNCATE_LOG; d <= LC_TRUNCATE_ELEM; d++) {
		lc_trial t = base(90 + d);
		lc_result r;

		t.replicas = 2;
		t.kill_after_ops = t.ops;
		t.damage = d;
		SCOPED_TRACE("damage " + std::to_string(d));
		ASSERT_EQ(lc_run(&t, &r), 0);
	}
}

// k = 1: the corrupt copy is the only one: the records it lost are reported, never replayed,
// and the cluster opens.
TEST(lifecycle, corrupt_only_copy__reported)
{
	uint64_t bad = 0;

	// The tail of every copy is corrupted, but the kill can land just after a destage of
	// everything (a full log is reclaimed by one), leaving no record to corrupt: so up to
	// three trials, each of which must serve, and one at least must report.
	for (uint64_t seed = 95; seed <= 97 && !bad; seed++) {
		lc_trial t = base(seed);
		lc_result r;

		t.kill_after_ops = t.ops;
		t.damage = LC_CORRUPT_LOGS;
		(void)lc_run(&t, &r); // what the corrupt records held may be lost: not linearizable
		EXPECT_GT(r.reads, 0u) << "the second life did not serve (seed " << seed << ")";
		bad = r.bad_records;
	}
	EXPECT_GT(bad, 0u) << "the corrupt records were not reported";
}
