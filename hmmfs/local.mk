# hmmfs: the FUSE daemon.
bin_PROGRAMS += hmmfs/hmmfs
hmmfs_hmmfs_SOURCES = \
	hmmfs/hmmfs.h \
	hmmfs/main.c \
	hmmfs/inode.c \
	hmmfs/dir.c \
	hmmfs/pages.c \
	hmmfs/file.c \
	hmmfs/fence.c \
	hmmfs/invalidate.c \
	hmmfs/xattr.c \
	hmmfs/migrate.c \
	hmmfs/session.c
hmmfs_hmmfs_CFLAGS = $(AM_CFLAGS) $(FUSE_CFLAGS)
hmmfs_hmmfs_LDADD = libhmm/libhmm-core.la $(FUSE_LIBS) $(NUMA_LIBS)

# hmmctl: the command-line tool; it uses only libhmm's public interface.
bin_PROGRAMS += hmmfs/hmmctl
hmmfs_hmmctl_SOURCES = hmmfs/hmmctl.c
hmmfs_hmmctl_LDADD = libhmm/libhmm.la
