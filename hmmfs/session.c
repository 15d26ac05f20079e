/* SPDX-License-Identifier: MIT */
/*
 * Sessions: processes attached to the mount's devices.
 *
 * A process attaches in two steps (libhmm's client.c does both):
 *  1. HMM_IOC_ATTACH on any file or directory of the mount.  The daemon
 *     checks the caller against the attach= option and answers with the
 *     name of its control socket and a one-time token, bound to the
 *     caller's uid and process and valid for TOKEN_SECONDS.
 *  2. The process connects to the socket (SOCK_SEQPACKET, abstract name)
 *     and presents the token; the daemon checks the peer's credentials
 *     (SO_PEERCRED) against it.  The connection is the session: it ends
 *     when either side closes it, the process's death included, and
 *     whatever the session held goes with it.
 * A file's memory on a device (pool.c, owned memory: one memfd per file and
 * device) is granted the same way: HMM_IOC_GRANT on the open file gives a
 * token for (file, device, the open's access mode), which the session
 * redeems for a descriptor of that memfd, reopened read-only unless the
 * file was opened for writing, so the kernel itself refuses a writable
 * mapping of it.  HMM_IOC_DEVICE_PAGES, again on the open file, says where
 * its pages lie in that memory.  A token proves that its holder could open
 * the file with that mode: the kernel checked the open, the token is
 * 128 random bits, and only the process that asked may redeem it.
 *
 * Invalidation.  Before a page of a granted file leaves a device, or its
 * memory there is freed, every session holding a grant of that file and
 * device is told (INVAL, a range of pages) and the change waits for its
 * answer (ACK): the client drops its device mappings of the range first,
 * as a driver's invalidate callback does.  A session that does not answer
 * within ACK_SECONDS is ended.  Whoever invalidates holds no data_lock:
 * a client's device access in flight, which the client's invalidation
 * waits for, may be a CPU access to a mapping of some file, served by a
 * FUSE worker that needs that file's data_lock.  So the page's memory is
 * fenced first (pages.c, hmmfs_pages_unshare; migration's MOVING state),
 * so that HMM_IOC_DEVICE_PAGES does not hand it out again meanwhile.
 *
 * Reservations.  A process keeps its anonymous memory on an attached device
 * in its own address space (libhmm's pool for the device), but the device's
 * capacity is the mount's: the session reserves that memory here (RESERVE,
 * in steps) and the device's pool counts it as used, so files and
 * processes share the capacity and hmmctl shows both.  A reservation never
 * evicts files' pages: it is refused (-ENOSPC) when the device is full.  It
 * ends with the session.
 *
 * Threads: one accepts connections; each session has one that reads the
 * client's messages.  Neither ever waits for an inode's data_lock.
 *
 * Locks: sessions.lock (a leaf, below every hmmfs lock but the migration
 * queue) protects the tokens, the list of sessions, their grants and their
 * invalidation counts; a session's send_lock orders the messages sent to it
 * (INVALs go out in the order of their numbers) and is never held while
 * waiting for an answer.
 */
#include "config.h"
#include "hmmfs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <hmm.h>
#include "hmm-internal.h"

/* How long a token waits to be redeemed, and a new client to say hello. */
#define TOKEN_SECONDS 10
/* How long a session may take to answer an invalidation. */
#define ACK_SECONDS 5
/* Tokens pending at once, and sessions at once: no caller can make the
 * daemon hold more than this much for it. */
#define MAX_TOKENS 256
#define MAX_SESSIONS 1024
/* Tokens pending, and sessions open, of one user other than the mount's
 * owner and root: anyone who can open a file may observe, and must not be
 * able to take every token or session from the others. */
#define MAX_PER_USER 64
/* Grants one session of such a user may hold. */
#define MAX_GRANTS_PER_USER_SESSION 1024
/* How long a message to a client may wait for room in its socket. */
#define SEND_SECONDS 1

enum token_kind { TOKEN_ATTACH, TOKEN_GRANT };

struct token {
	struct token *next;
	enum token_kind kind;
	uint64_t words[HMM_TOKEN_WORDS];
	uid_t uid;
	pid_t tgid;
	time_t expires;
	unsigned index;            /* TOKEN_ATTACH: the device, or HMM_ATTACH_OBSERVE */
	/* TOKEN_GRANT only: */
	struct hmmfs_inode *inode; /* pinned until redeemed or expired */
	unsigned device;
	int fd;                    /* the memory, with the access granted */
	bool writable;
};

struct grant {
	struct grant *next;        /* in its session */
	struct hmmfs_inode *inode; /* pinned while granted */
	unsigned device;
	uint64_t id;
};

struct session {
	struct session *next;
	int fd;
	uid_t uid;
	pid_t tgid;
	unsigned index;            /* the device attached, or HMM_ATTACH_OBSERVE */
	pthread_t thread;
	struct grant *grants;      /* protected by sessions.lock */
	uint64_t next_grant;       /* the reader's own */
	unsigned ngrants;          /* grants filed; the reader's own */
	pthread_mutex_t send_lock;
	uint64_t inval_sent;       /* INVALs numbered so far; send_lock */
	uint64_t inval_acked;      /* the last answered; sessions.lock */
	unsigned refs;             /* invalidations using it; sessions.lock */
	bool ended;                /* the reader is done; sessions.lock */
	bool welcomed;             /* its token was good; sessions.lock */
	/* Bytes of its device's memory reserved (RESERVE), held in the
	 * device's pool as whole pages; the reader's own. */
	uint64_t reserved;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t changed;    /* an ACK came, a session ended, refs dropped */
	bool started;
	int listen_fd;
	int stop_fd;               /* a pipe's write end: closing it ends accept */
	int stop_rd;
	pthread_t acceptor;
	char name[HMM_SOCKET_NAME_MAX];
	bool attach_all;           /* attach=all, else only the owner and root */
	uid_t owner;
	struct token *tokens;
	unsigned ntokens;
	struct session *sessions;
	unsigned nsessions;
} sessions = { .lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER,
	       .listen_fd = -1, .stop_fd = -1, .stop_rd = -1 };

/* A file's count of grants and grant tokens: while it is 0 nobody can map
 * its device memory, and changes need not invalidate. */
static void shared_get(struct hmmfs_inode *f)
{
	__atomic_add_fetch(&f->file.shared, 1, __ATOMIC_SEQ_CST);
}

static void shared_put(struct hmmfs_inode *f)
{
	__atomic_sub_fetch(&f->file.shared, 1, __ATOMIC_SEQ_CST);
}

bool hmmfs_session_shared(const struct hmmfs_inode *f)
{
	return __atomic_load_n(&f->file.shared, __ATOMIC_SEQ_CST) != 0;
}

int hmmfs_session_set_policy(const char *attach)
{
	if (!attach || !strcmp(attach, "owner"))
		sessions.attach_all = false;
	else if (!strcmp(attach, "all"))
		sessions.attach_all = true;
	else
		return -EINVAL;
	return 0;
}

/* The process (thread group) of thread tid.  Return: 0, or -errno. */
static int tgid_of(pid_t tid, pid_t *tgid)
{
	char path[64], line[128];
	FILE *f;
	int err = -ESRCH;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		int v;

		if (sscanf(line, "Tgid: %d", &v) == 1) {
			*tgid = v;
			err = 0;
			break;
		}
	}
	fclose(f);
	return err;
}

/* Whether the caller of req may attach at all.  Return: 0, -EACCES. */
static int may_attach(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	if (sessions.attach_all || ctx->uid == 0 || ctx->uid == sessions.owner)
		return 0;
	return -EACCES;
}

/* Whether uid is held to MAX_PER_USER. */
static bool per_user_limited(uid_t uid)
{
	return uid != 0 && uid != sessions.owner;
}

/* Tokens pending for uid.  Context: sessions.lock held. */
static unsigned tokens_of_locked(uid_t uid)
{
	unsigned n = 0;

	for (struct token *t = sessions.tokens; t; t = t->next)
		n += t->uid == uid;
	return n;
}

/* Sessions of uid that presented a good token.  Context: sessions.lock held. */
static unsigned sessions_of_locked(uid_t uid)
{
	unsigned n = 0;

	for (struct session *s = sessions.sessions; s; s = s->next)
		n += s->welcomed && s->uid == uid;
	return n;
}

/* Drop expired tokens.  Context: sessions.lock held; returns the grant
 * tokens' inodes and descriptors to release through *dead. */
static void expire_locked(struct token **dead)
{
	time_t now = time(NULL);

	for (struct token **pt = &sessions.tokens; *pt;) {
		struct token *t = *pt;

		if (t->expires > now) {
			pt = &t->next;
			continue;
		}
		*pt = t->next;
		sessions.ntokens--;
		t->next = *dead;
		*dead = t;
	}
}

static void token_free(struct token *t)
{
	while (t) {
		struct token *next = t->next;

		if (t->kind == TOKEN_GRANT) {
			if (t->fd >= 0)
				close(t->fd);
			shared_put(t->inode);
			hmmfs_inode_unpin(t->inode);
		}
		free(t);
		t = next;
	}
}

/* Make a token for the caller of req and file it; its words go to words
 * (the token itself may be redeemed and freed as soon as it is filed).  On
 * success the token owns t's inode pin and fd.
 * Return: 0, -EAGAIN (too many), -errno. */
static int token_issue(fuse_req_t req, struct token *t, uint64_t *words)
{
	struct token *dead = NULL;
	int err;

	err = tgid_of(fuse_req_ctx(req)->pid, &t->tgid);
	if (err)
		return err;
	t->uid = fuse_req_ctx(req)->uid;
	if (getrandom(t->words, sizeof(t->words), 0) != sizeof(t->words))
		return -EAGAIN;
	memcpy(words, t->words, sizeof(t->words));
	t->expires = time(NULL) + TOKEN_SECONDS;
	pthread_mutex_lock(&sessions.lock);
	expire_locked(&dead);
	if (sessions.ntokens >= MAX_TOKENS ||
	    (per_user_limited(t->uid) && tokens_of_locked(t->uid) >= MAX_PER_USER)) {
		err = -EAGAIN;
	} else {
		t->next = sessions.tokens;
		sessions.tokens = t;
		sessions.ntokens++;
	}
	pthread_mutex_unlock(&sessions.lock);
	token_free(dead);
	return err;
}

/* Take the token words of kind, if the peer (uid, tgid) may redeem it. */
static struct token *token_take(enum token_kind kind, const uint64_t *words, uid_t uid,
				pid_t tgid)
{
	struct token *dead = NULL, *found = NULL;

	pthread_mutex_lock(&sessions.lock);
	expire_locked(&dead);
	for (struct token **pt = &sessions.tokens; *pt; pt = &(*pt)->next) {
		struct token *t = *pt;

		if (t->kind != kind || memcmp(t->words, words, sizeof(t->words)))
			continue;
		/* A token is used once: a wrong redeemer burns it too. */
		*pt = t->next;
		sessions.ntokens--;
		if (t->uid == uid && t->tgid == tgid) {
			found = t;
			found->next = NULL;
		} else {
			t->next = dead;
			dead = t;
		}
		break;
	}
	pthread_mutex_unlock(&sessions.lock);
	token_free(dead);
	return found;
}

/*
 * The checks both ioctls start with.  Observing is open to anyone who can
 * open a file of the mount, whatever attach= says: it maps no memory and
 * tells only of changes to files the observer has open (a grant needs the
 * open file), which it could make itself.
 * Return: 0, -EINVAL, -ENODEV, -EACCES.
 */
static int check_request(fuse_req_t req, uint32_t flags, uint32_t index)
{
	if (flags)
		return -EINVAL;
	if ((index != HMM_ATTACH_OBSERVE && index >= hmmfs.ndevices) || !sessions.started)
		return -ENODEV;
	return index == HMM_ATTACH_OBSERVE ? 0 : may_attach(req);
}

void hmmfs_session_ioctl_attach(fuse_req_t req, const struct hmm_attach *in)
{
	struct hmm_attach out;
	struct token *t;
	int err;

	err = check_request(req, in->flags, in->index);
	t = err ? NULL : calloc(1, sizeof(*t));
	if (!err && !t)
		err = -ENOMEM;
	memset(&out, 0, sizeof(out));
	if (!err) {
		t->kind = TOKEN_ATTACH;
		t->index = in->index;
		err = token_issue(req, t, out.token);
	}
	if (err) {
		free(t);
		fuse_reply_err(req, -err);
		return;
	}
	out.index = in->index;
	memcpy(out.socket, sessions.name, sizeof(out.socket));
	fuse_reply_ioctl(req, 0, &out, sizeof(out));
}

/*
 * Share f with a session: *fd gets a descriptor of its memory on device k,
 * read-only unless writable, or -1 for an observer (k is
 * HMM_ATTACH_OBSERVE: no memory, only the file's invalidations).
 * Return: 0, or -errno.
 */
static int share(struct hmmfs_inode *f, unsigned k, bool writable, int *fd)
{
	struct hmm__pool_owner **slot;
	char path[64];
	int err = 0;

	pthread_rwlock_wrlock(&f->data_lock);
	*fd = -1;
	if (k == HMM_ATTACH_OBSERVE) {
		shared_get(f); /* see below */
		pthread_rwlock_unlock(&f->data_lock);
		return 0;
	}
	slot = hmmfs_pages_devmem(f, (int)k);
	if (!slot)
		err = -ENOMEM;
	else if (!*slot)
		err = hmm__pool_alloc_owned(&hmmfs.devices[k]->pool, slot, 0, NULL);
	if (err) {
		pthread_rwlock_unlock(&f->data_lock);
		return err;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", hmm__pool_owner_fd(*slot));
	*fd = writable ? fcntl(hmm__pool_owner_fd(*slot), F_DUPFD_CLOEXEC, 0)
		       : open(path, O_RDONLY | O_CLOEXEC);
	/* Counted under data_lock: a change that finds no sharing under it
	 * knows that nobody can have this file's pages mapped. */
	if (*fd >= 0)
		shared_get(f);
	else
		err = -errno;
	pthread_rwlock_unlock(&f->data_lock);
	return err;
}

void hmmfs_session_ioctl_grant(fuse_req_t req, struct hmmfs_inode *f,
			       const struct fuse_file_info *fi, const struct hmm_grant *in)
{
	struct hmm_grant out;
	struct token *t;
	bool writable = fi->fh & HMMFS_FH_WRITABLE;
	int err, fd;

	err = check_request(req, in->flags, in->index);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	err = share(f, in->index, writable, &fd);
	if (err) {
		free(t);
		fuse_reply_err(req, -err);
		return;
	}
	hmmfs_inode_pin(f);
	t->kind = TOKEN_GRANT;
	t->inode = f;
	t->device = in->index;
	t->fd = fd;
	t->writable = writable;
	memset(&out, 0, sizeof(out));
	err = token_issue(req, t, out.token);
	if (err) {
		if (fd >= 0)
			close(fd);
		shared_put(f);
		hmmfs_inode_unpin(f);
		free(t);
		fuse_reply_err(req, -err);
		return;
	}
	out.index = in->index;
	out.writable = writable;
	fuse_reply_ioctl(req, 0, &out, sizeof(out));
}

void hmmfs_session_ioctl_device_pages(fuse_req_t req, struct hmmfs_inode *f,
				      const struct hmm_device_pages *in)
{
	struct hmm_device_pages *out;
	uint64_t first, end;

	if (in->offset & (hmmfs.page_size - 1) || in->count == 0 ||
	    in->count > HMM_DEVICE_PAGES_MAX) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (in->index >= hmmfs.ndevices) {
		fuse_reply_err(req, ENODEV);
		return;
	}
	out = malloc(sizeof(*out));
	if (!out) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	*out = *in;
	first = in->offset >> hmmfs.page_shift;
	pthread_rwlock_rdlock(&f->data_lock);
	end = (f->file.size + hmmfs.page_size - 1) >> hmmfs.page_shift;
	out->count = first >= end ? 0 : (uint32_t)(end - first < in->count ? end - first
									  : in->count);
	for (uint32_t i = 0; i < out->count; i++) {
		struct hmm__page *pg = hmm__radix_lookup(&f->file.pages, first + i);
		uint64_t off;

		out->where[i] = HMM_DEVICE_PAGE_ABSENT;
		if (hmmfs_pages_unshared(f, first + i) || !pg || pg->loc != (int)in->index ||
		    pg->state != HMM__PAGE_STABLE)
			continue;
		/* Used in place only where the CPU has no copy (pages.c,
		 * "Coherence"): the access goes through the CPU's. */
		if (pg->cpu_copy)
			continue;
		if (hmm__pool_page_offset(&hmmfs.devices[in->index]->pool, pg->data, &off) == 0) {
			out->where[i] = off;
			__atomic_store_n(&pg->in_place, true, __ATOMIC_RELAXED);
		}
	}
	pthread_rwlock_unlock(&f->data_lock);
	fuse_reply_ioctl(req, 0, out, sizeof(*out));
	free(out);
}

/* Send one message, with a descriptor if fd >= 0.  Return: 0, -errno. */
static int session_send(struct session *s, const struct hmm__msg *msg, int fd)
{
	int err;

	pthread_mutex_lock(&s->send_lock);
	err = hmm__msg_send(s->fd, msg, fd);
	pthread_mutex_unlock(&s->send_lock);
	return err;
}

/* One message from the client; it has no descriptor to send us. */
static int session_recv(struct session *s, struct hmm__msg *msg)
{
	int fd, err = hmm__msg_recv(s->fd, msg, &fd);

	if (fd >= 0) {
		close(fd);
		err = -EPROTO;
	}
	return err;
}

/* Redeem a grant token in session s and send the memory. */
static int session_grant(struct session *s, const struct hmm__msg *req)
{
	struct hmm__msg reply = { .type = HMM__MSG_GRANTED, .seq = req->seq };
	struct token *t = token_take(TOKEN_GRANT, req->token, s->uid, s->tgid);
	bool full = per_user_limited(s->uid) && s->ngrants >= MAX_GRANTS_PER_USER_SESSION;
	struct grant *g;
	int err;

	g = t && !full ? calloc(1, sizeof(*g)) : NULL;
	if (!g) {
		reply.status = !t ? -EACCES : full ? -EAGAIN : -ENOMEM;
		token_free(t);
		return session_send(s, &reply, -1);
	}
	s->ngrants++;
	g->inode = t->inode; /* the token's pin and share become the grant's */
	g->device = t->device;
	g->id = ++s->next_grant;
	reply.arg[0] = g->id;
	reply.arg[1] = t->device;
	reply.arg[2] = t->writable;
	/* Filed before the client has the memory: an invalidation from the
	 * moment it can map a page on must reach it. */
	pthread_mutex_lock(&sessions.lock);
	g->next = s->grants;
	s->grants = g;
	pthread_mutex_unlock(&sessions.lock);
	err = session_send(s, &reply, t->fd);
	if (t->fd >= 0)
		close(t->fd);
	free(t);
	/* On error the session ends, and session_end drops the grant. */
	return err;
}

static uint64_t bytes_to_pages(uint64_t bytes)
{
	return (bytes + hmmfs.page_size - 1) / hmmfs.page_size;
}

/*
 * Reserve (RESERVE) or give back (UNRESERVE) bytes of a device's memory
 * for session s: the process keeps anonymous memory on the device in its
 * own address space, and the device's pool counts it as used.
 * Return: 0 (answered or not, as the type wants), or -errno to end the
 * session (a protocol error, or the answer could not be sent).
 */
static int session_reserve(struct session *s, const struct hmm__msg *req)
{
	struct hmm__msg reply = { .type = HMM__MSG_RESERVED, .seq = req->seq };
	uint64_t d = req->arg[0], bytes = req->arg[1], before, after;
	struct hmm__pool *pool;

	/* Only a session attached to the device, not an observer's. */
	if (d != s->index || d >= hmmfs.ndevices || !bytes) {
		if (req->type == HMM__MSG_UNRESERVE)
			return -EPROTO;
		reply.status = -EINVAL;
		return session_send(s, &reply, -1);
	}
	pool = &hmmfs.devices[d]->pool;
	before = bytes_to_pages(s->reserved);
	if (req->type == HMM__MSG_UNRESERVE) {
		if (bytes > s->reserved)
			return -EPROTO;
		s->reserved -= bytes;
		hmm__pool_unreserve(pool, before - bytes_to_pages(s->reserved));
		return 0;
	}
	if (bytes > pool->capacity_pages * hmmfs.page_size - s->reserved) {
		reply.status = -ENOSPC;
		return session_send(s, &reply, -1);
	}
	after = bytes_to_pages(s->reserved + bytes);
	reply.status = hmm__pool_reserve(pool, after - before);
	if (!reply.status)
		s->reserved += bytes;
	return session_send(s, &reply, -1);
}

/* Check the hello: the first message, within TOKEN_SECONDS. */
static int session_hello(struct session *s)
{
	struct timeval tv = { TOKEN_SECONDS, 0 }, none = { 0, 0 };
	struct hmm__msg msg, reply = { .type = HMM__MSG_WELCOME };
	struct token *t = NULL;
	int err;

	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	err = session_recv(s, &msg);
	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
	if (!err && msg.type != HMM__MSG_HELLO)
		err = -EPROTO;
	if (!err) {
		t = token_take(TOKEN_ATTACH, msg.token, s->uid, s->tgid);
		if (!t)
			err = -EACCES;
		else
			s->index = t->index;
	}
	token_free(t);
	if (!err) {
		pthread_mutex_lock(&sessions.lock);
		if (per_user_limited(s->uid) && sessions_of_locked(s->uid) >= MAX_PER_USER)
			err = -EAGAIN;
		else
			s->welcomed = true;
		pthread_mutex_unlock(&sessions.lock);
	}
	reply.status = err;
	reply.arg[0] = hmmfs.page_size;
	reply.arg[1] = hmmfs.ndevices;
	if (err != -EPROTO && err != -ECONNRESET) /* someone to answer */
		session_send(s, &reply, -1);
	return err;
}

static void session_end(struct session *s)
{
	struct grant *g;

	pthread_mutex_lock(&sessions.lock);
	for (struct session **ps = &sessions.sessions; *ps; ps = &(*ps)->next) {
		if (*ps == s) {
			*ps = s->next;
			break;
		}
	}
	g = s->grants;
	s->grants = NULL;
	/* Invalidations waiting for this session's answer stop waiting. */
	s->ended = true;
	pthread_cond_broadcast(&sessions.changed);
	while (s->refs)
		pthread_cond_wait(&sessions.changed, &sessions.lock);
	pthread_mutex_unlock(&sessions.lock);
	while (g) {
		struct grant *next = g->next;

		shared_put(g->inode);
		hmmfs_inode_unpin(g->inode);
		free(g);
		g = next;
	}
	if (s->reserved) /* only a session attached to a device has any */
		hmm__pool_unreserve(&hmmfs.devices[s->index]->pool, bytes_to_pages(s->reserved));
	close(s->fd);
	pthread_mutex_destroy(&s->send_lock);
	free(s);
	/* Last: hmmfs_session_stop() waits for this count to reach zero
	 * before the inodes can go. */
	pthread_mutex_lock(&sessions.lock);
	sessions.nsessions--;
	pthread_mutex_unlock(&sessions.lock);
}

static void *session_main(void *arg)
{
	struct session *s = arg;
	struct hmm__msg msg;

	if (session_hello(s) == 0) {
		while (session_recv(s, &msg) == 0) {
			if (msg.type == HMM__MSG_GRANT) {
				if (session_grant(s, &msg))
					break;
			} else if (msg.type == HMM__MSG_RESERVE ||
				   msg.type == HMM__MSG_UNRESERVE) {
				if (session_reserve(s, &msg))
					break;
			} else if (msg.type == HMM__MSG_ACK) {
				pthread_mutex_lock(&sessions.lock);
				if (msg.seq > s->inval_acked)
					s->inval_acked = msg.seq;
				pthread_cond_broadcast(&sessions.changed);
				pthread_mutex_unlock(&sessions.lock);
			} else {
				break; /* a protocol error ends the session */
			}
		}
	}
	session_end(s);
	return NULL;
}

static void *acceptor_main(void *arg)
{
	const struct timeval send_timeout = { SEND_SECONDS, 0 };

	(void)arg;
	for (;;) {
		struct pollfd p[2] = { { sessions.listen_fd, POLLIN, 0 },
				       { sessions.stop_rd, POLLIN, 0 } };
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct session *s;
		pthread_attr_t attr;
		int fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(sessions.listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		s = calloc(1, sizeof(*s));
		if (!s || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			free(s);
			close(fd);
			continue;
		}
		/* A client that stops reading must not hold the daemon: a send
		 * that cannot go out within SEND_SECONDS ends the session. */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
		s->fd = fd;
		s->uid = cred.uid;
		s->tgid = cred.pid;
		pthread_mutex_init(&s->send_lock, NULL);
		pthread_mutex_lock(&sessions.lock);
		if (sessions.nsessions >= MAX_SESSIONS) {
			pthread_mutex_unlock(&sessions.lock);
			pthread_mutex_destroy(&s->send_lock);
			free(s);
			close(fd);
			continue;
		}
		s->next = sessions.sessions;
		sessions.sessions = s;
		sessions.nsessions++;
		pthread_mutex_unlock(&sessions.lock);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&s->thread, &attr, session_main, s))
			session_end(s);
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

/* One session to tell, for one of its grants. */
struct target {
	struct session *s;
	uint64_t grant, seq;
};

/* Send INVAL to a target; a session that cannot take it is ended. */
static void send_inval(struct target *t, uint64_t first, uint64_t last)
{
	struct hmm__msg msg = { .type = HMM__MSG_INVAL };
	int err;

	msg.arg[0] = t->grant;
	msg.arg[1] = first;
	msg.arg[2] = last;
	/* Numbered and sent under one lock: INVALs go out in order. */
	pthread_mutex_lock(&t->s->send_lock);
	msg.seq = t->seq = ++t->s->inval_sent;
	err = hmm__msg_send(t->s->fd, &msg, -1);
	pthread_mutex_unlock(&t->s->send_lock);
	if (err)
		shutdown(t->s->fd, SHUT_RDWR);
}

void hmmfs_session_invalidate(struct hmmfs_inode *f, int loc, uint64_t first, uint64_t last,
			      bool wait)
{
	struct target *targets = NULL;
	size_t n = 0, cap = 0;
	struct timespec deadline;

	if (!hmmfs_session_shared(f))
		return;
	pthread_mutex_lock(&sessions.lock);
	for (struct session *s = sessions.sessions; s; s = s->next) {
		if (s->ended)
			continue;
		for (struct grant *g = s->grants; g; g = g->next) {
			if (g->inode != f || (loc >= 0 && g->device != (unsigned)loc))
				continue;
			if (n == cap) {
				size_t c = cap ? 2 * cap : 8;
				struct target *t = realloc(targets, c * sizeof(*t));

				if (!t) {
					/* Cannot even remember it: end it. */
					shutdown(s->fd, SHUT_RDWR);
					break;
				}
				targets = t;
				cap = c;
			}
			targets[n++] = (struct target){ s, g->id, 0 };
			s->refs++;
		}
	}
	pthread_mutex_unlock(&sessions.lock);
	for (size_t i = 0; i < n; i++)
		send_inval(&targets[i], first, last);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += ACK_SECONDS;
	pthread_mutex_lock(&sessions.lock);
	for (size_t i = 0; i < n; i++) {
		struct session *s = targets[i].s;

		while (wait && !s->ended && s->inval_acked < targets[i].seq) {
			if (pthread_cond_timedwait(&sessions.changed, &sessions.lock,
						   &deadline) == ETIMEDOUT) {
				/* Too slow: it is no longer trusted with the
				 * memory, and nothing waits for it. */
				shutdown(s->fd, SHUT_RDWR);
				break;
			}
		}
		s->refs--;
	}
	pthread_cond_broadcast(&sessions.changed);
	pthread_mutex_unlock(&sessions.lock);
	free(targets);
}

int hmmfs_session_start(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	uint64_t r;
	int fd, pipefd[2], err;
	socklen_t len;

	sessions.owner = getuid();
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		return -EAGAIN;
	snprintf(sessions.name, sizeof(sessions.name), "hmmfs.%d.%016" PRIx64, (int)getpid(), r);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Abstract name: addr.sun_path[0] stays NUL. */
	memcpy(addr.sun_path + 1, sessions.name, strlen(sessions.name));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sessions.name));
	if (bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, 64) < 0 ||
	    pipe2(pipefd, O_CLOEXEC) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	sessions.listen_fd = fd;
	sessions.stop_rd = pipefd[0];
	sessions.stop_fd = pipefd[1];
	err = -pthread_create(&sessions.acceptor, NULL, acceptor_main, NULL);
	if (err) {
		close(fd);
		close(pipefd[0]);
		close(pipefd[1]);
		sessions.listen_fd = sessions.stop_fd = sessions.stop_rd = -1;
		return err;
	}
	sessions.started = true;
	return 0;
}

void hmmfs_session_stop(void)
{
	struct token *tokens;

	if (!sessions.started)
		return;
	close(sessions.stop_fd);
	pthread_join(sessions.acceptor, NULL);
	close(sessions.listen_fd);
	close(sessions.stop_rd);
	sessions.started = false;
	/* End every session and wait for its thread to go. */
	pthread_mutex_lock(&sessions.lock);
	for (struct session *s = sessions.sessions; s; s = s->next)
		shutdown(s->fd, SHUT_RDWR);
	pthread_mutex_unlock(&sessions.lock);
	for (;;) {
		unsigned n;

		pthread_mutex_lock(&sessions.lock);
		n = sessions.nsessions;
		pthread_mutex_unlock(&sessions.lock);
		if (!n)
			break;
		usleep(1000);
	}
	pthread_mutex_lock(&sessions.lock);
	tokens = sessions.tokens;
	sessions.tokens = NULL;
	sessions.ntokens = 0;
	pthread_mutex_unlock(&sessions.lock);
	token_free(tokens);
}
