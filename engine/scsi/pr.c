/*
 * pr.c - persistent reservations (pr.h): the table's on-disk form, PERSISTENT RESERVE OUT's
 * service actions (SPC-4 5.13.5 to 5.13.11), PERSISTENT RESERVE IN's answers (6.13), and the
 * conflict rule. Pure: no I/O, no locks; lu.c reads and writes the table.
 *
 * On disk (PR_BYTES, little-endian): magic 0..7, gen 8, nreg 12, res_type 16, res_holder 17,
 * zero to 59, crc32c of the whole table (this field zero) at 60; then nreg entries of PR_ENTRY
 * bytes: key 0, rel_port 8, name length 10, name 12 (not NUL-terminated), zero to the end.
 *
 * Leaves out: what pr.h says is refused.
 */
#include <errno.h>
#include <string.h>

#include <isa-l/crc.h>

#include "be.h"
#include "pr.h"

static const uint8_t pr_magic[8] = { 'C', 'O', 'H', 'P', 'R', 0, 0, 1 };

/* The table on disk is little-endian like the rest of Cohort's records. */
static uint32_t pr_get32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void pr_put32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static bool pr_type_ok(uint8_t type)
{
	switch (type) {
	case PR_TYPE_WE:
	case PR_TYPE_EA:
	case PR_TYPE_WE_RO:
	case PR_TYPE_EA_RO:
	case PR_TYPE_WE_AR:
	case PR_TYPE_EA_AR:
		return true;
	}
	return false;
}

static bool pr_all_registrants(uint8_t type)
{
	return type == PR_TYPE_WE_AR || type == PR_TYPE_EA_AR;
}

int pr_decode(const uint8_t *buf, size_t len, struct pr_table *t)
{
	uint8_t hdr[PR_HDR];
	uint32_t crc, i;

	memset(t, 0, sizeof(*t));
	t->res_holder = PR_NO_HOLDER;
	if (len < PR_BYTES)
		return -EBADMSG;
	for (i = 0; i < PR_BYTES && !buf[i]; i++)
		;
	if (i == PR_BYTES)
		return 0; /* never written: the volume's first table */
	if (memcmp(buf, pr_magic, sizeof(pr_magic)))
		return -EBADMSG;
	memcpy(hdr, buf, PR_HDR);
	memset(hdr + 60, 0, 4);
	crc = crc32_iscsi(hdr, PR_HDR, 0);
	crc = crc32_iscsi((unsigned char *)buf + PR_HDR, PR_BYTES - PR_HDR, crc);
	if (crc != pr_get32le(buf + 60))
		return -EBADMSG;
	t->gen = pr_get32le(buf + 8);
	t->nreg = pr_get32le(buf + 12);
	t->res_type = buf[16];
	t->res_holder = buf[17];
	if (t->nreg > PR_REGS_MAX)
		return -EBADMSG;
	if (t->res_type != PR_TYPE_NONE && !pr_type_ok(t->res_type))
		return -EBADMSG;
	/* A single holder is a registrant; none for no reservation or an all-registrants one. */
	if (t->res_type == PR_TYPE_NONE || pr_all_registrants(t->res_type)
		? t->res_holder != PR_NO_HOLDER
		: t->res_holder >= t->nreg)
		return -EBADMSG;
	for (i = 0; i < t->nreg; i++) {
		const uint8_t *e = buf + PR_HDR + (size_t)i * PR_ENTRY;
		struct pr_reg *r = &t->regs[i];
		uint32_t n = e[10] | (uint32_t)e[11] << 8;

		if (!n || n > PR_NAME_MAX || memchr(e + 12, 0, n))
			return -EBADMSG;
		r->key = (uint64_t)pr_get32le(e) | (uint64_t)pr_get32le(e + 4) << 32;
		r->rel_port = (uint16_t)(e[8] | e[9] << 8);
		memcpy(r->name, e + 12, n);
		r->name[n] = 0;
	}
	return 0;
}

void pr_encode(const struct pr_table *t, uint8_t *buf, size_t len)
{
	uint32_t i, crc;

	memset(buf, 0, len);
	memcpy(buf, pr_magic, sizeof(pr_magic));
	pr_put32le(buf + 8, t->gen);
	pr_put32le(buf + 12, t->nreg);
	buf[16] = t->res_type;
	buf[17] = t->res_holder;
	for (i = 0; i < t->nreg && i < PR_REGS_MAX; i++) {
		uint8_t *e = buf + PR_HDR + (size_t)i * PR_ENTRY;
		const struct pr_reg *r = &t->regs[i];
		size_t n = strnlen(r->name, PR_NAME_MAX);

		pr_put32le(e, (uint32_t)r->key);
		pr_put32le(e + 4, (uint32_t)(r->key >> 32));
		e[8] = (uint8_t)r->rel_port;
		e[9] = (uint8_t)(r->rel_port >> 8);
		e[10] = (uint8_t)n;
		e[11] = (uint8_t)(n >> 8);
		memcpy(e + 12, r->name, n);
	}
	crc = crc32_iscsi(buf, PR_BYTES, 0);
	pr_put32le(buf + 60, crc);
}

/* pr_find - @me's registration, or -1. */
static int pr_find(const struct pr_table *t, const struct pr_nexus *me)
{
	uint32_t i;

	for (i = 0; i < t->nreg; i++)
		if (t->regs[i].rel_port == me->rel_port && !strcmp(t->regs[i].name, me->initiator))
			return (int)i;
	return -1;
}

/* pr_holds - does registration @i hold the reservation? */
static bool pr_holds(const struct pr_table *t, int i)
{
	if (i < 0 || t->res_type == PR_TYPE_NONE)
		return false;
	return pr_all_registrants(t->res_type) || t->res_holder == (uint32_t)i;
}

/* pr_drop - remove registration @i; a reservation it held alone goes with it (5.13.11.2.3), an
 * all-registrants one with the last registrant. */
static void pr_drop(struct pr_table *t, uint32_t i)
{
	if (t->res_holder == i)
		t->res_type = PR_TYPE_NONE, t->res_holder = PR_NO_HOLDER;
	else if (t->res_holder != PR_NO_HOLDER && t->res_holder > i)
		t->res_holder--;
	memmove(&t->regs[i], &t->regs[i + 1], (t->nreg - i - 1) * sizeof(t->regs[0]));
	t->nreg--;
	if (!t->nreg && pr_all_registrants(t->res_type))
		t->res_type = PR_TYPE_NONE;
}

/* pr_register - REGISTER (@ignore: AND IGNORE EXISTING KEY), 5.13.7. */
static enum pr_result pr_register(struct pr_table *t, const struct pr_nexus *me, int i,
				  uint64_t key, uint64_t sa_key, bool ignore)
{
	struct pr_reg *r;

	if (i < 0) {
		if (key && !ignore)
			return PR_CONFLICT;
		if (!sa_key)
			return PR_OK;
		if (t->nreg == PR_REGS_MAX)
			return PR_NO_ROOM;
		r = &t->regs[t->nreg++];
		memset(r, 0, sizeof(*r));
		r->key = sa_key;
		r->rel_port = me->rel_port;
		strncpy(r->name, me->initiator, PR_NAME_MAX);
		t->gen++;
		return PR_CHANGED;
	}
	if (!ignore && key != t->regs[i].key)
		return PR_CONFLICT;
	if (sa_key)
		t->regs[i].key = sa_key;
	else
		pr_drop(t, (uint32_t)i);
	t->gen++;
	return PR_CHANGED;
}

/* pr_preempt - PREEMPT and PREEMPT AND ABORT from registration @i, 5.13.11.2. The preempter's
 * own registration is never removed. */
static enum pr_result pr_preempt(struct pr_table *t, uint32_t i, uint8_t type, uint64_t sa_key)
{
	bool single = t->res_type != PR_TYPE_NONE && !pr_all_registrants(t->res_type);
	bool take;
	uint32_t j, w = 0, me = 0, holder = PR_NO_HOLDER, n = 0;

	/* Key 0 names nobody, except that it takes over an all-registrants reservation. */
	if (!sa_key && (single || t->res_type == PR_TYPE_NONE))
		return PR_BAD_PARAM;
	take =
	    single ? sa_key == t->regs[t->res_holder].key : t->res_type != PR_TYPE_NONE && !sa_key;
	for (j = 0; j < t->nreg; j++) {
		if (j != i && (!sa_key || t->regs[j].key == sa_key)) {
			n++;
			continue;
		}
		if (j == i)
			me = w;
		if (t->res_holder == j)
			holder = w;
		t->regs[w++] = t->regs[j];
	}
	if (!n && !take)
		return PR_CONFLICT;
	t->nreg = w;
	if (take) {
		t->res_type = type;
		holder = pr_all_registrants(type) ? PR_NO_HOLDER : me;
	}
	t->res_holder = (uint8_t)holder;
	t->gen++;
	return PR_CHANGED;
}

enum pr_result pr_out(struct pr_table *t, const struct pr_nexus *me, const uint8_t *cdb,
		      const uint8_t *param, uint32_t plen, int *field)
{
	uint8_t sa = cdb[1] & 0x1f, scope = cdb[2] >> 4, type = cdb[2] & 0x0f;
	uint64_t key, sa_key;
	int i;

	*field = -1;
	if (sa > 6) { /* REGISTER AND MOVE, REPLACE LOST RESERVATION, and unknown ones */
		*field = 1;
		return PR_BAD_CDB;
	}
	if (be_get32(cdb + 5) != 24 || plen < 24)
		return PR_BAD_LENGTH;
	if (param[20] & 0x08) { /* SPEC_I_PT: REPORT CAPABILITIES says SIP_C=0 */
		*field = 20;
		return PR_BAD_PARAM;
	}
	if (param[20] & 0x04) { /* ALL_TG_PT: ATP_C=0 */
		*field = 20;
		return PR_BAD_PARAM;
	}
	/* RESERVE, RELEASE and the preempts name a type and LU scope; the rest ignore them. */
	if (sa == 1 || sa == 2 || sa == 4 || sa == 5) {
		if (scope) {
			*field = 2;
			return PR_BAD_CDB;
		}
		if (!pr_type_ok(type)) {
			*field = 2;
			return PR_BAD_CDB;
		}
	}
	if (!me->initiator || !me->initiator[0] || strlen(me->initiator) > PR_NAME_MAX)
		return PR_CONFLICT;
	key = be_get64(param);
	sa_key = be_get64(param + 8);
	i = pr_find(t, me);
	if (sa == 0 || sa == 6)
		return pr_register(t, me, i, key, sa_key, sa == 6);
	/* Everything else needs a registered nexus that gives its own key (5.13.2). */
	if (i < 0 || key != t->regs[i].key)
		return PR_CONFLICT;
	switch (sa) {
	case 1: /* RESERVE, 5.13.9 */
		if (t->res_type == PR_TYPE_NONE) {
			t->res_type = type;
			t->res_holder = pr_all_registrants(type) ? PR_NO_HOLDER : (uint8_t)i;
			return PR_CHANGED;
		}
		return pr_holds(t, i) && t->res_type == type ? PR_OK : PR_CONFLICT;
	case 2: /* RELEASE, 5.13.10 */
		if (!pr_holds(t, i))
			return PR_OK;
		if (t->res_type != type)
			return PR_BAD_RELEASE;
		t->res_type = PR_TYPE_NONE;
		t->res_holder = PR_NO_HOLDER;
		return PR_CHANGED;
	case 3: /* CLEAR, 5.13.11.1 */
		t->nreg = 0;
		t->res_type = PR_TYPE_NONE;
		t->res_holder = PR_NO_HOLDER;
		t->gen++;
		return PR_CHANGED;
	default: /* PREEMPT, PREEMPT AND ABORT */
		return pr_preempt(t, (uint32_t)i, type, sa_key);
	}
}

/* pr_transport_id - @name as an SPC-4 TransportID (7.6.4): SAS for a tcm_loop "naa." address,
 * iSCSI (format 00b) otherwise. Its length, or 0 when @cap is too small. */
static uint32_t pr_transport_id(const char *name, uint8_t *p, uint32_t cap)
{
	size_t n = strlen(name);
	uint32_t len, i;

	if (n == 20 && !strncmp(name, "naa.", 4)) {
		if (cap < 24)
			return 0;
		memset(p, 0, 24);
		p[0] = 0x06; /* SAS */
		for (i = 0; i < 8; i++) {
			unsigned int hi, lo;
			char c1 = name[4 + 2 * i], c2 = name[5 + 2 * i];

			hi = (unsigned)(c1 <= '9' ? c1 - '0' : (c1 | 0x20) - 'a' + 10);
			lo = (unsigned)(c2 <= '9' ? c2 - '0' : (c2 | 0x20) - 'a' + 10);
			p[4 + i] = (uint8_t)((hi & 15) << 4 | (lo & 15));
		}
		return 24;
	}
	/* The name, NUL-terminated, padded to a multiple of 4; at least 20 bytes after the header. */
	len = (uint32_t)((n + 1 + 3) & ~(size_t)3);
	if (len < 20)
		len = 20;
	if (cap < 4 + len)
		return 0;
	memset(p, 0, 4 + len);
	p[0] = 0x05; /* iSCSI, format 00b */
	be_put16(p + 2, len);
	memcpy(p + 4, name, n);
	return 4 + len;
}

int pr_in(const struct pr_table *t, uint8_t sa, uint8_t *out, uint32_t cap)
{
	uint8_t tmp[PR_HDR + PR_REGS_MAX * (24 + 4 + PR_NAME_MAX + 4)];
	uint32_t len = 8, i;

	memset(tmp, 0, sizeof(tmp));
	be_put32(tmp, t->gen);
	switch (sa) {
	case 0: /* READ KEYS */
		for (i = 0; i < t->nreg; i++, len += 8)
			be_put64(tmp + len, t->regs[i].key);
		break;
	case 1: /* READ RESERVATION */
		if (t->res_type != PR_TYPE_NONE) {
			/* An all-registrants reservation reports key 0 (6.13.3.3). */
			if (!pr_all_registrants(t->res_type))
				be_put64(tmp + 8, t->regs[t->res_holder].key);
			tmp[21] = t->res_type; /* scope 0: LU_SCOPE */
			len += 16;
		}
		break;
	case 2: /* REPORT CAPABILITIES: no SIP_C, ATP_C; PTPL_C and PTPL_A: the table persists */
		be_put16(tmp, 8);
		tmp[2] = 0x01;	      /* PTPL_C */
		tmp[3] = 0x80 | 0x01; /* TMV, PTPL_A */
		tmp[4] =
		    0x80 | 0x40 | 0x20 | 0x08 | 0x02; /* WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX */
		tmp[5] = 0x01;			      /* EX_AC_AR */
		memcpy(out, tmp, cap < 8 ? cap : 8);
		return 8;
	case 3: /* READ FULL STATUS */
		for (i = 0; i < t->nreg; i++) {
			uint8_t *d = tmp + len;
			uint32_t tid = pr_transport_id(t->regs[i].name, d + 24,
						       (uint32_t)sizeof(tmp) - len - 24);

			be_put64(d, t->regs[i].key);
			if (pr_holds(t, (int)i)) {
				d[12] = 0x01; /* R_HOLDER */
				d[13] = t->res_type;
			}
			be_put16(d + 18, t->regs[i].rel_port);
			be_put32(d + 20, tid);
			len += 24 + tid;
		}
		break;
	default:
		return -1;
	}
	be_put32(tmp + 4, len - 8);
	memcpy(out, tmp, cap < len ? cap : len);
	return (int)len;
}

bool pr_conflict(const struct pr_table *t, const struct pr_nexus *me, uint8_t op)
{
	bool exclusive_access, registered;
	int i;

	switch (op) {
	case 0x00: /* TEST UNIT READY */
	case 0x03: /* REQUEST SENSE */
	case 0x12: /* INQUIRY */
	case 0x25: /* READ CAPACITY(10) */
	case 0x9e: /* READ CAPACITY(16) */
	case 0xa0: /* REPORT LUNS */
	case 0xa3: /* REPORT TARGET PORT GROUPS */
	case 0x5e: /* PERSISTENT RESERVE IN */
	case 0x5f: /* PERSISTENT RESERVE OUT: its own rules */
		return false;
	}
	if (t->res_type == PR_TYPE_NONE)
		return false;
	i = pr_find(t, me);
	if (pr_holds(t, i))
		return false;
	exclusive_access = t->res_type == PR_TYPE_EA || t->res_type == PR_TYPE_EA_RO ||
			   t->res_type == PR_TYPE_EA_AR;
	registered = i >= 0;
	switch (op) {
	case 0x08:
	case 0x28:
	case 0xa8:
	case 0x88: /* READ */
	case 0x2f:
	case 0x8f: /* VERIFY */
	case 0x1a:
	case 0x5a: /* MODE SENSE */
		if (!exclusive_access)
			return false;
		break;
	}
	/* Registrants-only and all-registrants reservations let every registrant through. */
	if (t->res_type == PR_TYPE_WE || t->res_type == PR_TYPE_EA)
		return true;
	return !registered;
}
