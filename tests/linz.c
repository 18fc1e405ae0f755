/*
 * linz.c - linearizability of register histories where every write writes a distinct value.
 *
 * Group each block's operations into clusters: a write and the reads that returned its value
 * (plus a virtual initial write of 0, before everything). For such histories the history is
 * linearizable iff (1) every read returns a value some write wrote (or the initial one) and does
 * not end before that write began, and (2) the clusters can be ordered so that whenever some
 * operation of cluster A ends before some operation of cluster B begins, A comes first. Condition
 * (2) is a cycle check on the graph with an edge A->B iff min_resp(A) < max_inv(B). Quadratic in
 * the number of writes per block, which the tests keep in the low thousands.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "linz.h"

struct cluster {
	uint64_t value;
	uint64_t min_resp, max_inv;
	const struct linz_op *write;
};

/* edge - cluster a must come before cluster b. The initial value comes before everything. */
static bool edge(const struct cluster *cl, size_t a, size_t b)
{
	return a == 0 || cl[a].min_resp < cl[b].max_inv;
}

static int by_block_then_value(const void *a, const void *b)
{
	const struct linz_op *x = a, *y = b;

	if (x->block != y->block)
		return x->block < y->block ? -1 : 1;
	if (x->value != y->value)
		return x->value < y->value ? -1 : 1;
	return (int)y->is_write - (int)x->is_write; /* the write first within a value */
}

static void describe(FILE *why, const char *what, const struct linz_op *o)
{
	if (why)
		fprintf(why, "  %s: node %u %s block %llu value %llx [%llu, %llu]\n", what, o->node,
			o->is_write ? "write" : "read", (unsigned long long)o->block,
			(unsigned long long)o->value, (unsigned long long)o->inv,
			(unsigned long long)o->resp);
}

/* check_block - ops[0..n) are one block's, sorted by value with writes first. */
static int check_block(const struct linz_op *ops, size_t n, FILE *why)
{
	struct cluster *cl;
	uint32_t *indeg;
	bool *done;
	size_t k = 0, i, j, left;
	int ret = 0;

	cl = calloc(n + 1, sizeof(*cl));
	indeg = calloc(n + 1, sizeof(*indeg));
	done = calloc(n + 1, sizeof(*done));
	if (!cl || !indeg || !done) {
		ret = -ENOMEM;
		goto out;
	}
	/* Cluster 0: the initial value, "written" before time began. */
	cl[0].value = 0;
	cl[0].min_resp = 0;
	cl[0].max_inv = 0;
	k = 1;
	for (i = 0; i < n; i++) {
		const struct linz_op *o = &ops[i];
		struct cluster *c = NULL;

		if (o->value == 0) {
			if (o->is_write) {
				ret = -EINVAL;
				goto out;
			}
			c = &cl[0];
		} else if (k > 1 && cl[k - 1].value == o->value) {
			c = &cl[k - 1];
			if (o->is_write) {
				ret = -EINVAL; /* written twice */
				goto out;
			}
		} else {
			if (!o->is_write) {
				if (why)
					fprintf(why,
						"block %llu: a read returned a value nobody "
						"wrote\n",
						(unsigned long long)o->block);
				describe(why, "read", o);
				ret = 1;
				goto out;
			}
			c = &cl[k++];
			c->value = o->value;
			c->write = o;
			c->min_resp = o->resp;
			c->max_inv = o->inv;
			continue;
		}
		if (c->write && o->resp < c->write->inv) {
			if (why)
				fprintf(why,
					"block %llu: a read ended before the write it returned "
					"began\n",
					(unsigned long long)o->block);
			describe(why, "write", c->write);
			describe(why, "read", o);
			ret = 1;
			goto out;
		}
		if (o->resp < c->min_resp || c == &cl[0])
			c->min_resp = c == &cl[0] ? 0 : o->resp;
		if (o->inv > c->max_inv)
			c->max_inv = o->inv;
	}
	/* Edges a->b iff min_resp(a) < max_inv(b); the initial cluster precedes all. */
	for (i = 0; i < k; i++) {
		for (j = 0; j < k; j++) {
			if (i != j && edge(cl, i, j))
				indeg[j]++;
		}
	}
	for (left = k; left;) {
		for (i = 0; i < k; i++) {
			if (!done[i] && !indeg[i])
				break;
		}
		if (i == k) {
			if (why) {
				fprintf(why,
					"block %llu: no order of the writes fits real time; "
					"clusters in the cycle:\n",
					(unsigned long long)ops[0].block);
				for (i = 0; i < k; i++) {
					if (!done[i] && cl[i].write)
						describe(why, "write", cl[i].write);
					else if (!done[i])
						fprintf(why,
							"  initial value, last read invoked at "
							"%llu\n",
							(unsigned long long)cl[i].max_inv);
				}
				/* The reads that tie them: each cluster's first answer and
				 * last invocation come from these. */
				for (j = 0; j < n; j++) {
					for (i = 1; i < k && cl[i].value != ops[j].value; i++)
						;
					if (!ops[j].is_write &&
					    (ops[j].value == 0 ? !done[0] : i < k && !done[i]))
						describe(why, "  read", &ops[j]);
				}
			}
			ret = 1;
			goto out;
		}
		done[i] = true;
		left--;
		for (j = 0; j < k; j++) {
			if (!done[j] && j != i && edge(cl, i, j))
				indeg[j]--;
		}
	}
out:
	free(done);
	free(indeg);
	free(cl);
	return ret;
}

int linz_check(struct linz_op *ops, size_t n, FILE *why)
{
	size_t i = 0, j;
	int ret;

	if (!ops && n)
		return -EINVAL;
	if (!n)
		return 0;
	qsort(ops, n, sizeof(*ops), by_block_then_value);
	while (i < n) {
		for (j = i; j < n && ops[j].block == ops[i].block; j++)
			;
		ret = check_block(ops + i, j - i, why);
		if (ret)
			return ret;
		i = j;
	}
	return 0;
}
