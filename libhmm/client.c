/* SPDX-License-Identifier: MIT */
/*
 * client.c - talking to an hmmfs daemon: a session with the devices of a
 * mount, and the memory of its files on them (the daemon's side and the
 * protocol: hmmfs/session.c and hmm-internal.h).
 *
 * A client is one connection.  Requests are answered in order; a client's
 * lock makes each request and its answer one exchange.
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
	pthread_mutex_t lock;   /* one exchange at a time */
	int sock;
	unsigned index;         /* the device attached to */
	size_t page_size;
	unsigned ndevices;
	uint64_t seq;           /* protected by lock */
};

static int send_msg(int sock, const struct hmm__msg *msg)
{
	ssize_t n;

	do
		n = send(sock, msg, sizeof(*msg), MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*msg) ? 0 : n < 0 ? -errno : -EIO;
}

/* One message, and the descriptor that came with it (-1 if none). */
static int recv_msg(int sock, struct hmm__msg *msg, int *fd)
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

int hmm__client_attach(const char *path, unsigned index, struct hmm__client **out)
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
	err = send_msg(sock, &hello);
	if (!err)
		err = recv_msg(sock, &welcome, &mfd);
	if (!err && mfd >= 0) {
		close(mfd);
		err = -EPROTO;
	}
	if (!err && welcome.type != HMM__MSG_WELCOME)
		err = -EPROTO;
	if (!err)
		err = welcome.status > 0 ? -EPROTO : welcome.status;
	c = err ? NULL : calloc(1, sizeof(*c));
	if (!err && !c)
		err = -ENOMEM;
	if (err) {
		close(sock);
		return err;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->sock = sock;
	c->index = index;
	c->page_size = (size_t)welcome.arg[0];
	c->ndevices = (unsigned)welcome.arg[1];
	*out = c;
	return 0;
}

int hmm__client_grant(struct hmm__client *c, int fd, int *memfd, bool *writable)
{
	struct hmm_grant g = { .index = c->index };
	struct hmm__msg req = { .type = HMM__MSG_GRANT }, reply;
	int mfd = -1, err;

	if (ioctl(fd, HMM_IOC_GRANT, &g) < 0)
		return -errno;
	memcpy(req.token, g.token, sizeof(req.token));
	pthread_mutex_lock(&c->lock);
	req.seq = ++c->seq;
	err = send_msg(c->sock, &req);
	if (!err)
		err = recv_msg(c->sock, &reply, &mfd);
	pthread_mutex_unlock(&c->lock);
	if (!err && (reply.type != HMM__MSG_GRANTED || reply.seq != req.seq))
		err = -EPROTO;
	if (!err)
		err = reply.status > 0 ? -EPROTO : reply.status;
	if (!err && mfd < 0)
		err = -EPROTO;
	if (err) {
		if (mfd >= 0)
			close(mfd);
		return err;
	}
	*memfd = mfd;
	if (writable)
		*writable = reply.arg[2] != 0;
	return 0;
}

size_t hmm__client_page_size(const struct hmm__client *c)
{
	return c->page_size;
}

void hmm__client_detach(struct hmm__client *c)
{
	if (!c)
		return;
	close(c->sock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
