/* SPDX-License-Identifier: MIT */
/*
 * client.c - talking to an hmmfs daemon: a session with the devices of a
 * mount, and the memory of its files on them (the daemon's side and the
 * protocol: hmmfs/session.c and hmm-internal.h).
 *
 * A client is one connection and two threads.  The reader takes every
 * message: answers to the one request in flight (a client's lock allows
 * one at a time) go to the thread that waits for them; an invalidation
 * (INVAL) is queued for the invalidator, which passes it to the client's
 * callback and answers (ACK) when the callback returns.  The reader never
 * waits for a callback: a thread may ask the daemon something while
 * holding a lock that an invalidation needs (a driver allocating device
 * memory under its own lock), and its answer must not queue behind that
 * invalidation.  The callback must not make a request of the same client
 * and wait for it while the daemon waits for the ACK.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <hmm.h>

struct hmm__client {
	pthread_mutex_t lock;   /* one request at a time */
	pthread_mutex_t send_lock;
	int sock;
	unsigned index;         /* the device attached to */
	size_t page_size;
	unsigned ndevices;
	uint64_t seq;           /* protected by lock */
	hmm__client_inval_fn inval;
	void *arg;
	pthread_t reader;
	/* The answer to the request in flight; protected by reply_lock. */
	pthread_mutex_t reply_lock;
	pthread_cond_t replied;
	struct hmm__msg reply;
	int reply_fd;
	bool have_reply;
	bool gone;              /* the connection ended */
	/* INVALs for the invalidator, oldest first; protected by reply_lock. */
	struct inval *invals, **invals_tail;
	pthread_cond_t inval_queued;
	pthread_t invalidator;
};

struct inval {
	struct inval *next;
	struct hmm__msg msg;
};

int hmm__msg_send(int sock, const struct hmm__msg *msg, int fd)
{
	struct iovec iov = { (void *)msg, sizeof(*msg) };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*msg) ? 0 : n < 0 ? -errno : -EIO;
}

int hmm__msg_recv(int sock, struct hmm__msg *msg, int *fd)
{
	struct iovec iov = { msg, sizeof(*msg) };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c;
	ssize_t n;

	*fd = -1;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	if (n != (ssize_t)sizeof(*msg)) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return n == 0 ? -ECONNRESET : -EPROTO;
	}
	return 0;
}

static int connect_to(const char *name)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	size_t len = strnlen(name, HMM_SOCKET_NAME_MAX);
	int sock, err;

	if (len == 0 || len >= HMM_SOCKET_NAME_MAX || len + 1 > sizeof(addr.sun_path))
		return -EPROTO;
	memcpy(addr.sun_path + 1, name, len);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	if (connect(sock, (struct sockaddr *)&addr,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)) < 0) {
		err = -errno;
		close(sock);
		return err;
	}
	return sock;
}

static int client_send(struct hmm__client *c, const struct hmm__msg *msg)
{
	int err;

	pthread_mutex_lock(&c->send_lock);
	err = hmm__msg_send(c->sock, msg, -1);
	pthread_mutex_unlock(&c->send_lock);
	return err;
}

/* Run one invalidation and answer it.  Return: 0, or the send's -errno. */
static int invalidate(struct hmm__client *c, const struct hmm__msg *msg)
{
	struct hmm__msg ack = { .type = HMM__MSG_ACK, .seq = msg->seq };

	if (c->inval)
		c->inval(c->arg, msg->arg[0], msg->arg[1], msg->arg[2]);
	return client_send(c, &ack);
}

/* The invalidator: runs the queued INVALs in order, until the connection
 * ends and the queue is empty. */
static void *invalidator_main(void *arg)
{
	void *stack = hmm__own_stack_begin(); /* not for a migration to take */
	struct hmm__client *c = arg;

	pthread_mutex_lock(&c->reply_lock);
	for (;;) {
		struct inval *v = c->invals;

		if (!v) {
			if (c->gone)
				break;
			pthread_cond_wait(&c->inval_queued, &c->reply_lock);
			continue;
		}
		c->invals = v->next;
		if (!c->invals)
			c->invals_tail = &c->invals;
		pthread_mutex_unlock(&c->reply_lock);
		invalidate(c, &v->msg);
		hmm__free(v);
		pthread_mutex_lock(&c->reply_lock);
	}
	pthread_mutex_unlock(&c->reply_lock);
	hmm__own_stack_end(stack);
	return NULL;
}

static void *reader_main(void *arg)
{
	void *stack = hmm__own_stack_begin(); /* not for a migration to take */
	struct hmm__client *c = arg;
	struct hmm__msg msg;
	int fd;

	while (hmm__msg_recv(c->sock, &msg, &fd) == 0) {
		if (msg.type == HMM__MSG_INVAL && fd < 0) {
			struct inval *v = hmm__malloc(sizeof(*v));

			if (!v) {
				/* No memory to queue it.  Running it here could
				 * answer it before older ones and wait on a lock
				 * a requester holds: end the session instead. */
				shutdown(c->sock, SHUT_RDWR);
				break;
			}
			v->next = NULL;
			v->msg = msg;
			pthread_mutex_lock(&c->reply_lock);
			*c->invals_tail = v;
			c->invals_tail = &v->next;
			pthread_cond_signal(&c->inval_queued);
			pthread_mutex_unlock(&c->reply_lock);
			continue;
		}
		pthread_mutex_lock(&c->reply_lock);
		if (c->have_reply && c->reply_fd >= 0)
			close(c->reply_fd); /* nobody asked for it */
		c->reply = msg;
		c->reply_fd = fd;
		c->have_reply = true;
		pthread_cond_broadcast(&c->replied);
		pthread_mutex_unlock(&c->reply_lock);
	}
	pthread_mutex_lock(&c->reply_lock);
	c->gone = true;
	pthread_cond_broadcast(&c->replied);
	pthread_cond_signal(&c->inval_queued);
	pthread_mutex_unlock(&c->reply_lock);
	hmm__own_stack_end(stack);
	return NULL;
}

/* Send req and wait for its answer.  Context: c->lock held. */
static int exchange(struct hmm__client *c, struct hmm__msg *req, struct hmm__msg *reply, int *fd)
{
	int err;

	pthread_mutex_lock(&c->reply_lock);
	if (c->have_reply && c->reply_fd >= 0)
		close(c->reply_fd);
	c->have_reply = false;
	pthread_mutex_unlock(&c->reply_lock);
	req->seq = ++c->seq;
	err = client_send(c, req);
	if (err)
		return err;
	pthread_mutex_lock(&c->reply_lock);
	while (!c->have_reply && !c->gone)
		pthread_cond_wait(&c->replied, &c->reply_lock);
	if (c->have_reply) {
		*reply = c->reply;
		*fd = c->reply_fd;
		c->have_reply = false;
	} else {
		err = -ECONNRESET;
	}
	pthread_mutex_unlock(&c->reply_lock);
	return err;
}

static void client_free(struct hmm__client *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->send_lock);
	pthread_mutex_destroy(&c->reply_lock);
	pthread_cond_destroy(&c->replied);
	pthread_cond_destroy(&c->inval_queued);
	hmm__free(c);
}

int hmm__client_attach(const char *path, unsigned index, hmm__client_inval_fn inval,
		       void *arg, struct hmm__client **out)
{
	struct hmm_attach a = { .index = index };
	struct hmm__msg hello = { .type = HMM__MSG_HELLO }, welcome;
	struct hmm__client *c;
	int fd, sock, mfd, err;

	if (!path || !out)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	err = ioctl(fd, HMM_IOC_ATTACH, &a) < 0 ? -errno : 0;
	close(fd);
	if (err)
		return err;
	a.socket[HMM_SOCKET_NAME_MAX - 1] = '\0';
	sock = connect_to(a.socket);
	if (sock < 0)
		return sock;
	memcpy(hello.token, a.token, sizeof(hello.token));
	err = hmm__msg_send(sock, &hello, -1);
	if (!err)
		err = hmm__msg_recv(sock, &welcome, &mfd);
	if (!err && mfd >= 0) {
		close(mfd);
		err = -EPROTO;
	}
	if (!err && welcome.type != HMM__MSG_WELCOME)
		err = -EPROTO;
	if (!err)
		err = welcome.status > 0 ? -EPROTO : welcome.status;
	c = err ? NULL : hmm__calloc(1, sizeof(*c));
	if (!err && !c)
		err = -ENOMEM;
	if (err) {
		close(sock);
		return err;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_mutex_init(&c->reply_lock, NULL);
	pthread_cond_init(&c->replied, NULL);
	pthread_cond_init(&c->inval_queued, NULL);
	c->invals_tail = &c->invals;
	c->sock = sock;
	c->index = index;
	c->page_size = (size_t)welcome.arg[0];
	c->ndevices = (unsigned)welcome.arg[1];
	c->inval = inval;
	c->arg = arg;
	c->reply_fd = -1;
	err = -pthread_create(&c->invalidator, NULL, invalidator_main, c);
	if (!err) {
		err = -pthread_create(&c->reader, NULL, reader_main, c);
		if (err) {
			pthread_mutex_lock(&c->reply_lock);
			c->gone = true;
			pthread_cond_signal(&c->inval_queued);
			pthread_mutex_unlock(&c->reply_lock);
			pthread_join(c->invalidator, NULL);
		}
	}
	if (err) {
		close(sock);
		client_free(c);
		return err;
	}
	*out = c;
	return 0;
}

int hmm__client_grant(struct hmm__client *c, int fd, int *memfd, bool *writable,
		      uint64_t *grant)
{
	struct hmm_grant g = { .index = c->index };
	struct hmm__msg req = { .type = HMM__MSG_GRANT }, reply;
	int mfd = -1, err;

	if (ioctl(fd, HMM_IOC_GRANT, &g) < 0)
		return -errno;
	memcpy(req.token, g.token, sizeof(req.token));
	pthread_mutex_lock(&c->lock);
	err = exchange(c, &req, &reply, &mfd);
	pthread_mutex_unlock(&c->lock);
	if (!err && (reply.type != HMM__MSG_GRANTED || reply.seq != req.seq))
		err = -EPROTO;
	if (!err)
		err = reply.status > 0 ? -EPROTO : reply.status;
	/* Memory comes with every grant but an observer's. */
	if (!err && (mfd < 0) != (c->index == HMM_ATTACH_OBSERVE))
		err = -EPROTO;
	if (err) {
		if (mfd >= 0)
			close(mfd);
		return err;
	}
	if (memfd)
		*memfd = mfd;
	else if (mfd >= 0)
		close(mfd);
	if (writable)
		*writable = reply.arg[2] != 0;
	if (grant)
		*grant = reply.arg[0];
	return 0;
}

size_t hmm__client_page_size(const struct hmm__client *c)
{
	return c->page_size;
}

bool hmm__client_alive(struct hmm__client *c)
{
	bool alive;

	pthread_mutex_lock(&c->reply_lock);
	alive = !c->gone;
	pthread_mutex_unlock(&c->reply_lock);
	return alive;
}

void hmm__client_forget(struct hmm__client *c)
{
	if (!c)
		return;
	/* A copy made by fork(): the socket is the parent's too, and the
	 * threads are not in this process. */
	close(c->sock);
	while (c->invals) {
		struct inval *v = c->invals;

		c->invals = v->next;
		hmm__free(v);
	}
	hmm__free(c);
}

void hmm__client_detach(struct hmm__client *c)
{
	if (!c)
		return;
	/* The reader sees the end of the connection and stops; the
	 * invalidator runs what was queued, then stops too. */
	shutdown(c->sock, SHUT_RDWR);
	pthread_join(c->reader, NULL);
	pthread_join(c->invalidator, NULL);
	close(c->sock);
	if (c->have_reply && c->reply_fd >= 0)
		close(c->reply_fd);
	client_free(c);
}

int hmm__client_reserve(struct hmm__client *c, uint64_t n)
{
	struct hmm__msg req = { .type = HMM__MSG_RESERVE, .arg = { c->index, n } }, reply;
	int fd = -1, err;

	if (c->index == HMM_ATTACH_OBSERVE || !n)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	err = exchange(c, &req, &reply, &fd);
	pthread_mutex_unlock(&c->lock);
	if (fd >= 0) {
		close(fd);
		err = err ? err : -EPROTO;
	}
	if (!err && (reply.type != HMM__MSG_RESERVED || reply.seq != req.seq))
		err = -EPROTO;
	if (!err)
		err = reply.status > 0 ? -EPROTO : reply.status;
	return err;
}

int hmm__client_unreserve(struct hmm__client *c, uint64_t n)
{
	struct hmm__msg msg = { .type = HMM__MSG_UNRESERVE, .arg = { c->index, n } };

	return n ? client_send(c, &msg) : 0;
}
