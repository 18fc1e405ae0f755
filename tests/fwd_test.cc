// fwd_test.cc - forwarded commands (engine/route/forward.c, include/cohort/forward.h) between
// controller processes on the fabric harness (conf.h: shm by default, rdma in the VM rig). Each
// controller runs a forwarder and an executor over an in-memory volume of its own, standing in
// for the AMF of its group; the scenarios forward reads, writes and flushes from every controller
// to every other, relay errors and counts, kill a target holding commands, and time a command
// out and take its late status. Every wait is bounded (the harness's alarm, and each wait's own
// bound).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "cohort/forward.h"
#include "conf.h"

namespace
{
constexpr uint32_t kBs = 512, kBlocks = 256, kMaxBlocks = 16, kSlots = 4;
constexpr unsigned kTimeout = 120;
constexpr uint64_t kMapVersion = 7;

// The executor: this controller's volume, and what it is told to do with commands.
struct executor {
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
	uint8_t vol[kBlocks * kBs];
	bool hold = false;		 // keep commands instead of completing them
	std::vector<coh_fwd_cmd *> held; // what it keeps
	uint32_t flushes = 0;
};
executor ex;

// ex_run - execute @cmd against the volume: bad volume or table -> -ESTALE, blocks from 200 on
// fail with -EIO after the ones before them were done.
void ex_run(coh_fwd_cmd *cmd)
{
	uint32_t done = 0;
	int st = 0;

	if (cmd->map_version != kMapVersion) {
		coh_fwd_complete(cmd, -ESTALE, 0);
		return;
	}
	if (cmd->op == COH_FWD_FLUSH) {
		pthread_mutex_lock(&ex.mu);
		ex.flushes++;
		pthread_mutex_unlock(&ex.mu);
		coh_fwd_complete(cmd, 0, 0);
		return;
	}
	if (cmd->lba + cmd->nblocks > kBlocks) {
		coh_fwd_complete(cmd, -EINVAL, 0);
		return;
	}
	pthread_mutex_lock(&ex.mu);
	for (; done < cmd->nblocks; done++) {
		uint64_t b = cmd->lba + done;

		if (b >= 200) {
			st = -EIO;
			break;
		}
		if (cmd->op == COH_FWD_WRITE)
			memcpy(ex.vol + b * kBs, (uint8_t *)cmd->buf + done * kBs, kBs);
		else
			memcpy((uint8_t *)cmd->buf + done * kBs, ex.vol + b * kBs, kBs);
	}
	pthread_mutex_unlock(&ex.mu);
	coh_fwd_complete(cmd, st, done);
}

void ex_execute(void *, coh_fwd_cmd *cmd)
{
	pthread_mutex_lock(&ex.mu);
	if (ex.hold) {
		ex.held.push_back(cmd);
		pthread_cond_broadcast(&ex.cv);
		pthread_mutex_unlock(&ex.mu);
		return;
	}
	pthread_mutex_unlock(&ex.mu);
	ex_run(cmd);
}

// An origin's command, its buffer and what its callback saw.
struct origin_cmd {
	coh_fwd_cmd cmd;
	std::vector<uint8_t> buf;
	int status = 1;
	uint32_t done = 0;
	int calls = 0;
};

struct origin {
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
	uint32_t completed = 0;
};
origin og;

void og_done(coh_fwd_cmd *cmd, int status, uint32_t blocks_done)
{
	origin_cmd *o = static_cast<origin_cmd *>(cmd->arg);

	pthread_mutex_lock(&og.mu);
	o->status = status;
	o->done = blocks_done;
	o->calls++;
	og.completed++;
	pthread_cond_broadcast(&og.cv);
	pthread_mutex_unlock(&og.mu);
}

void og_prepare(origin_cmd &o, uint32_t op, uint64_t lba, uint32_t n,
		uint64_t version = kMapVersion)
{
	memset(&o.cmd, 0, sizeof(o.cmd));
	o.buf.assign((size_t)(n ? n : 1) * kBs, 0);
	o.cmd.op = op;
	o.cmd.volume = 0;
	o.cmd.map_version = version;
	o.cmd.lba = lba;
	o.cmd.nblocks = n;
	o.cmd.buf = o.buf.data();
	o.cmd.done = og_done;
	o.cmd.arg = &o;
	o.status = 1;
	o.calls = 0;
}

// og_wait - wait until @count commands have completed in all, at most @ms.
bool og_wait(uint32_t count, int ms)
{
	struct timespec until;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&og.mu);
	while (og.completed < count && !pthread_cond_timedwait(&og.cv, &og.mu, &until))
		;
	ok = og.completed >= count;
	pthread_mutex_unlock(&og.mu);
	return ok;
}

// og_submit - submit, and while every slot is busy wait for a completion (bounded).
int og_submit(coh_fwd *f, uint32_t target, origin_cmd &o)
{
	for (int tries = 0; tries < 1000; tries++) {
		uint32_t seen;
		int ret;

		pthread_mutex_lock(&og.mu);
		seen = og.completed;
		pthread_mutex_unlock(&og.mu);
		ret = coh_fwd_submit(f, target, &o.cmd);
		if (ret != -EBUSY)
			return ret;
		if (!og_wait(seen + 1, 10000))
			return -ETIMEDOUT;
	}
	return -EBUSY;
}

int fwd_open(conf_node *cn, coh_fwd **f, uint32_t timeout_ms = 0, uint32_t slots = kSlots)
{
	coh_fwd_attr a = {};

	a.attr_size = sizeof(a);
	a.fab = cn->fab;
	a.nodes = cn->n;
	a.block_size = kBs;
	a.max_blocks = kMaxBlocks;
	a.slots = slots;
	a.timeout_ms = timeout_ms;
	a.execute = ex_execute;
	return coh_fwd_new(&a, f);
}

// The pattern of block @b of the volume of controller @vol, written by @from in its @round.
void fill(uint8_t *p, uint32_t from, uint32_t vol, uint32_t round, uint64_t b)
{
	for (uint32_t w = 0; w < kBs / 8; w++) {
		uint64_t v =
		    (uint64_t)from << 56 | (uint64_t)vol << 48 | (uint64_t)round << 32 | b << 8 | w;

		memcpy(p + w * 8, &v, 8);
	}
}

// Every controller writes, through forwarding, its own 64 blocks of every other controller's
// volume (two rounds over them, at most kSlots in flight, none in flight together overlapping);
// then every controller reads every other's whole volume through forwarding and finds each
// region as its writer left it: a write through one controller read back through another.
int sc_every_controller_to_every_other(conf_node *cn)
{
	constexpr uint32_t kRegion = 64, kRun = 4, kWrites = 2 * kRegion / kRun;
	coh_fwd *f = nullptr;
	std::vector<origin_cmd> cmds(kWrites * cn->n);
	uint32_t submitted = 0, i, t;

	CONF_CHECK(fwd_open(cn, &f) == 0, "forwarder");
	for (t = 0; t < cn->n; t++) {
		if (t == cn->id)
			continue;
		for (i = 0; i < kWrites; i++) {
			origin_cmd &o = cmds[t * kWrites + i];
			uint64_t lba = cn->id * kRegion + (i * kRun) % kRegion;

			og_prepare(o, COH_FWD_WRITE, lba, kRun);
			for (uint32_t b = 0; b < kRun; b++)
				fill(o.buf.data() + b * kBs, cn->id, t, i / (kRegion / kRun),
				     lba + b);
			CONF_CHECK(og_submit(f, t, o) == 0, "submit a write to %u", t);
			submitted++;
		}
	}
	CONF_CHECK(og_wait(submitted, 20000), "writes complete");
	for (auto &o : cmds) {
		if (!o.cmd.done)
			continue; // the slots of this controller's own volume: not sent
		CONF_CHECK(o.calls == 1 && o.status == 0,
			   "each write completed once with 0: %d, %d", o.calls, o.status);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier after the writes");

	// Read back every other controller's volume, 16 blocks at a time.
	std::vector<origin_cmd> reads(cn->n * (cn->n * kRegion / kMaxBlocks));
	uint32_t nreads = 0, base;

	pthread_mutex_lock(&og.mu);
	base = og.completed;
	pthread_mutex_unlock(&og.mu);
	for (t = 0; t < cn->n; t++) {
		if (t == cn->id)
			continue;
		for (uint64_t lba = 0; lba < cn->n * kRegion; lba += kMaxBlocks) {
			origin_cmd &o = reads[nreads++];

			og_prepare(o, COH_FWD_READ, lba, kMaxBlocks);
			o.cmd.volume = t; // not used by the executor; carried all the same
			CONF_CHECK(og_submit(f, t, o) == 0, "submit a read to %u", t);
		}
	}
	CONF_CHECK(og_wait(base + nreads, 20000), "reads complete");
	for (i = 0; i < nreads; i++) {
		origin_cmd &o = reads[i];
		uint32_t vol = i / (cn->n * kRegion / kMaxBlocks);
		std::vector<uint8_t> want(kBs);

		vol =
		    vol >= cn->id ? vol + 1 : vol; // the controllers other than this one, in order
		CONF_CHECK(o.calls == 1 && o.status == 0, "read %u: %d", i, o.status);
		for (uint32_t b = 0; b < kMaxBlocks; b++) {
			uint64_t lba = o.cmd.lba + b;
			uint32_t from = (uint32_t)(lba / kRegion);

			if (from == vol) {
				std::vector<uint8_t> zero(kBs, 0);
				CONF_CHECK(!memcmp(o.buf.data() + b * kBs, zero.data(), kBs),
					   "block %llu of %u: written by no one",
					   (unsigned long long)lba, vol);
				continue;
			}
			fill(want.data(), from, vol, 1, lba);
			CONF_CHECK(!memcmp(o.buf.data() + b * kBs, want.data(), kBs),
				   "block %llu of controller %u's volume, written by %u",
				   (unsigned long long)lba, vol, from);
		}
	}
	struct coh_fwd_stats st;
	coh_fwd_stats(f, &st);
	CONF_CHECK(st.forwarded == submitted + nreads && st.timeouts == 0 && st.bad_msgs == 0,
		   "stats: forwarded %llu timeouts %llu bad %llu", (unsigned long long)st.forwarded,
		   (unsigned long long)st.timeouts, (unsigned long long)st.bad_msgs);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier before the end");
	coh_fwd_delete(&f);
	return 0;
}

TEST(forward, every_controller_to_every_other)
{
	EXPECT_EQ(0, conf_run("fwd_every", 3, sc_every_controller_to_every_other, 0, kTimeout));
}

// Node 0 sends node 1 commands that fail there, a flush, a command routed by another table's
// version, and bad submits; each outcome comes back as the target gave it.
int sc_errors_are_relayed(conf_node *cn)
{
	coh_fwd *f = nullptr;
	origin_cmd a, b, c, d, e;

	CONF_CHECK(fwd_open(cn, &f) == 0, "forwarder");
	if (cn->id == 0) {
		og_prepare(a, COH_FWD_WRITE, 195, 10); // blocks 200.. fail: 5 done
		og_prepare(b, COH_FWD_READ, 190, 16);  // 10 done
		og_prepare(c, COH_FWD_FLUSH, 0, 0);
		og_prepare(d, COH_FWD_READ, 0, 1, kMapVersion + 1);
		og_prepare(e, COH_FWD_READ, 250, 10); // past the end
		for (origin_cmd *o : { &a, &b, &c, &d, &e })
			CONF_CHECK(og_submit(f, 1, *o) == 0, "submit");
		CONF_CHECK(og_wait(5, 20000), "five completions");
		CONF_CHECK(a.status == -EIO && a.done == 5, "write: %d, %u done", a.status, a.done);
		CONF_CHECK(b.status == -EIO && b.done == 10, "read: %d, %u done", b.status, b.done);
		CONF_CHECK(c.status == 0, "flush: %d", c.status);
		CONF_CHECK(d.status == -ESTALE && d.done == 0, "stale table: %d", d.status);
		CONF_CHECK(e.status == -EINVAL, "past the end: %d", e.status);
		// Refused here, nothing sent: too long, to itself, unknown target or operation.
		origin_cmd bad;
		og_prepare(bad, COH_FWD_READ, 0, kMaxBlocks + 1);
		CONF_CHECK(coh_fwd_submit(f, 1, &bad.cmd) == -EINVAL, "too long");
		og_prepare(bad, COH_FWD_READ, 0, 1);
		CONF_CHECK(coh_fwd_submit(f, 0, &bad.cmd) == -EINVAL, "to itself");
		CONF_CHECK(coh_fwd_submit(f, 9, &bad.cmd) == -EINVAL, "no such controller");
		bad.cmd.op = 9;
		CONF_CHECK(coh_fwd_submit(f, 1, &bad.cmd) == -EINVAL, "unknown operation");
		og_prepare(bad, COH_FWD_FLUSH, 0, 3);
		CONF_CHECK(coh_fwd_submit(f, 1, &bad.cmd) == -EINVAL, "a flush with blocks");
		CONF_CHECK(bad.calls == 0, "no callback for a refused submit");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	if (cn->id == 1) {
		pthread_mutex_lock(&ex.mu);
		uint32_t flushes = ex.flushes;
		pthread_mutex_unlock(&ex.mu);
		CONF_CHECK(flushes == 1, "one flush executed here, %u", flushes);
	}
	coh_fwd_delete(&f);
	return 0;
}

TEST(forward, errors_and_counts_are_relayed)
{
	EXPECT_EQ(0, conf_run("fwd_errors", 2, sc_errors_are_relayed, 0, kTimeout));
}

// Controller 2 keeps every command it is sent and dies holding them (SIGKILL). Controllers 0 and
// 1 each sent it three writes and a read: each completes once with -ECONNRESET (-ECONNABORTED
// where the fabric cannot prove a death), 2 is no longer up, a submit to it is refused, and 0
// and 1 still forward to each other.
int sc_target_killed(conf_node *cn)
{
	coh_fwd *f = nullptr;
	origin_cmd o[4], after;
	struct timespec until;

	pthread_mutex_lock(&ex.mu);
	ex.hold = cn->id == 2;
	pthread_mutex_unlock(&ex.mu);
	CONF_CHECK(fwd_open(cn, &f) == 0, "forwarder");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every forwarder up");
	if (cn->id == 2) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 20;
		pthread_mutex_lock(&ex.mu);
		while (ex.held.size() < 8 && !pthread_cond_timedwait(&ex.cv, &ex.mu, &until))
			;
		size_t n = ex.held.size();
		pthread_mutex_unlock(&ex.mu);
		CONF_CHECK(n == 8, "holding %zu commands", n);
		raise(SIGKILL);
		return 1;
	}
	for (int i = 0; i < 4; i++) {
		og_prepare(o[i], i < 3 ? COH_FWD_WRITE : COH_FWD_READ, 10 * i, 4);
		CONF_CHECK(coh_fwd_submit(f, 2, &o[i].cmd) == 0, "submit %d", i);
	}
	CONF_CHECK(og_wait(4, 30000), "the commands to the dead controller complete");
	// shm proves the death (the caller may send them elsewhere); rdma cannot (it must not).
	int want = strcmp(cn->provider, "shm") ? -ECONNABORTED : -ECONNRESET;
	for (int i = 0; i < 4; i++)
		CONF_CHECK(o[i].calls == 1 && o[i].status == want, "command %d: %d calls, %d", i,
			   o[i].calls, o[i].status);
	CONF_CHECK(!(coh_fwd_up(f) & 4u), "controller 2 down: up 0x%x", coh_fwd_up(f));
	og_prepare(after, COH_FWD_READ, 0, 1);
	CONF_CHECK(coh_fwd_submit(f, 2, &after.cmd) == -EHOSTDOWN, "a submit to the dead one");
	og_prepare(after, COH_FWD_WRITE, 100 + cn->id, 1);
	CONF_CHECK(og_submit(f, 1 - cn->id, after) == 0, "a submit to the other survivor");
	CONF_CHECK(og_wait(5, 20000) && after.status == 0, "forwarded between survivors: %d",
		   after.status);
	struct coh_fwd_stats st;
	coh_fwd_stats(f, &st);
	CONF_CHECK(st.peer_downs == 1, "one connection down, %llu",
		   (unsigned long long)st.peer_downs);
	// Neither survivor leaves while the other's command may still be on its way to it.
	uint8_t token = 1;
	CONF_CHECK(conf_send(cn, 1 - cn->id, &token, 1) == 0, "tell the other survivor");
	CONF_CHECK(conf_recv(cn, 1 - cn->id, &token, NULL, 20000) == 0, "hear from it");
	coh_fwd_delete(&f);
	// The harness's last barrier needs every node: the survivors finish by themselves.
	coh_ep_delete(&cn->ep[2]);
	coh_ep_delete(&cn->ctl[2]);
	cn->n = 2;
	return 0;
}

TEST(forward, a_target_killed_mid_command_fails_its_commands)
{
	EXPECT_EQ(0, conf_run("fwd_killed", 3, sc_target_killed, 1u << 2, kTimeout));
}

// A command that times out keeps its slot (one slot here) until its late status comes: a submit
// meanwhile is refused with -EBUSY, not sent where the target might still read or write it.
int sc_late_status(conf_node *cn)
{
	coh_fwd *f = nullptr;
	origin_cmd w1, w2;
	char msg[8];
	uint32_t len = sizeof(msg);

	pthread_mutex_lock(&ex.mu);
	ex.hold = cn->id == 1;
	pthread_mutex_unlock(&ex.mu);
	CONF_CHECK(fwd_open(cn, &f, 300, 1) == 0, "forwarder");
	if (cn->id == 0) {
		og_prepare(w1, COH_FWD_WRITE, 5, 2);
		fill(w1.buf.data(), 0, 1, 1, 5);
		fill(w1.buf.data() + kBs, 0, 1, 1, 6);
		CONF_CHECK(coh_fwd_submit(f, 1, &w1.cmd) == 0, "submit");
		CONF_CHECK(og_wait(1, 20000) && w1.status == -ETIMEDOUT, "timed out: %d",
			   w1.status);
		og_prepare(w2, COH_FWD_READ, 5, 2);
		CONF_CHECK(coh_fwd_submit(f, 1, &w2.cmd) == -EBUSY, "the slot is still out");
		CONF_CHECK(conf_send(cn, 1, "go", 3) == 0, "tell 1 to complete");
		// The late status frees the slot; it does not call the callback again.
		int ret = -EBUSY;
		for (int i = 0; i < 20000 && ret == -EBUSY; i++) {
			struct coh_fwd_stats st;
			coh_fwd_stats(f, &st);
			if (st.late == 1)
				ret = coh_fwd_submit(f, 1, &w2.cmd);
			else
				usleep(1000); // polling a counter, bounded: 20 s
		}
		CONF_CHECK(ret == 0, "submit after the late status: %d", ret);
		CONF_CHECK(og_wait(2, 20000) && w2.status == 0, "read: %d", w2.status);
		CONF_CHECK(w1.calls == 1, "the timed-out write's callback ran once: %d", w1.calls);
		// The late write was applied at the target: the read sees it.
		CONF_CHECK(!memcmp(w2.buf.data(), w1.buf.data(), 2 * kBs), "the late write's data");
		struct coh_fwd_stats st;
		coh_fwd_stats(f, &st);
		CONF_CHECK(st.timeouts == 1 && st.late == 1, "timeouts %llu late %llu",
			   (unsigned long long)st.timeouts, (unsigned long long)st.late);
	} else {
		CONF_CHECK(conf_recv(cn, 0, msg, &len, 20000) == 0, "told to go");
		// On a slow fabric (rxe under TCG) the request or its data may come after the
		// origin's timeout: wait for it (bounded), it is the late command either way.
		for (int i = 0; i < 20000; i++) {
			pthread_mutex_lock(&ex.mu);
			bool got = !ex.held.empty();
			pthread_mutex_unlock(&ex.mu);
			if (got)
				break;
			usleep(1000); // polling the executor's list, bounded: 20 s
		}
		pthread_mutex_lock(&ex.mu);
		ex.hold = false;
		std::vector<coh_fwd_cmd *> held;
		held.swap(ex.held);
		pthread_mutex_unlock(&ex.mu);
		CONF_CHECK(held.size() == 1, "one held command, %zu", held.size());
		ex_run(held[0]);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_fwd_delete(&f);
	return 0;
}

TEST(forward, a_late_status_after_a_timeout_frees_its_slot)
{
	EXPECT_EQ(0, conf_run("fwd_late", 2, sc_late_status, 0, kTimeout));
}

// A command abandoned (coh_fwd_abandon: its target fenced, as a paused controller is) completes
// at once with -ECONNABORTED, long before its deadline (60 s here), and only once: its slot (one
// here) stays out of use until the late status comes, which frees it without a second callback.
int sc_abandon(conf_node *cn)
{
	coh_fwd *f = nullptr;
	origin_cmd w1, w2;
	char msg[8];
	uint32_t len = sizeof(msg);

	pthread_mutex_lock(&ex.mu);
	ex.hold = cn->id == 1;
	pthread_mutex_unlock(&ex.mu);
	CONF_CHECK(fwd_open(cn, &f, 60000, 1) == 0, "forwarder");
	if (cn->id == 0) {
		CONF_CHECK(coh_fwd_abandon(f, 1) == 0 && coh_fwd_abandon(f, 7) == 0,
			   "nothing to abandon");
		og_prepare(w1, COH_FWD_WRITE, 9, 2);
		fill(w1.buf.data(), 0, 1, 1, 9);
		fill(w1.buf.data() + kBs, 0, 1, 1, 10);
		CONF_CHECK(coh_fwd_submit(f, 1, &w1.cmd) == 0, "submit");
		CONF_CHECK(conf_recv(cn, 1, msg, &len, 20000) == 0, "1 holds it");
		CONF_CHECK(w1.calls == 0, "not completed yet");
		CONF_CHECK(coh_fwd_abandon(f, 1) == 1, "one abandoned");
		CONF_CHECK(w1.calls == 1 && w1.status == -ECONNABORTED, "abandoned: %d calls, %d",
			   w1.calls, w1.status);
		og_prepare(w2, COH_FWD_READ, 9, 2);
		CONF_CHECK(coh_fwd_submit(f, 1, &w2.cmd) == -EBUSY, "the slot is still out");
		CONF_CHECK(conf_send(cn, 1, "go", 3) == 0, "tell 1 to complete");
		int ret = -EBUSY;
		for (int i = 0; i < 20000 && ret == -EBUSY; i++) {
			struct coh_fwd_stats st;
			coh_fwd_stats(f, &st);
			if (st.late == 1)
				ret = coh_fwd_submit(f, 1, &w2.cmd);
			else
				usleep(1000); // polling a counter, bounded: 20 s
		}
		CONF_CHECK(ret == 0, "submit after the late status: %d", ret);
		CONF_CHECK(og_wait(2, 20000) && w2.status == 0, "read: %d", w2.status);
		CONF_CHECK(w1.calls == 1, "the abandoned write's callback ran once: %d", w1.calls);
		struct coh_fwd_stats st;
		coh_fwd_stats(f, &st);
		CONF_CHECK(st.abandoned == 1 && st.timeouts == 0 && st.late == 1,
			   "abandoned %llu timeouts %llu late %llu",
			   (unsigned long long)st.abandoned, (unsigned long long)st.timeouts,
			   (unsigned long long)st.late);
	} else {
		for (int i = 0; i < 20000; i++) {
			pthread_mutex_lock(&ex.mu);
			bool got = !ex.held.empty();
			pthread_mutex_unlock(&ex.mu);
			if (got)
				break;
			usleep(1000); // polling the executor's list, bounded: 20 s
		}
		CONF_CHECK(conf_send(cn, 0, "held", 5) == 0, "tell 0 it is held");
		CONF_CHECK(conf_recv(cn, 0, msg, &len, 20000) == 0, "told to go");
		pthread_mutex_lock(&ex.mu);
		ex.hold = false;
		std::vector<coh_fwd_cmd *> held;
		held.swap(ex.held);
		pthread_mutex_unlock(&ex.mu);
		CONF_CHECK(held.size() == 1, "one held command, %zu", held.size());
		ex_run(held[0]);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_fwd_delete(&f);
	return 0;
}

TEST(forward, an_abandoned_command_completes_at_once_and_once)
{
	EXPECT_EQ(0, conf_run("fwd_abandon", 2, sc_abandon, 0, kTimeout));
}
} // namespace
