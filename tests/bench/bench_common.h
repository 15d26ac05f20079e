/* SPDX-License-Identifier: MIT */
/*
 * bench_common.h - what the bench programs share: fatal errors, the clock,
 * a pseudo-random sequence, stamped data blocks and the file made of them,
 * the page-cache state of a file (mincore) and dropping it, a mount's
 * read-ahead, fresh anonymous memory, work split between threads, medians,
 * size arguments and the rows of a result table.  Nothing here is timed on
 * its own.
 */
#ifndef HMMFS_BENCH_COMMON_H
#define HMMFS_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/statfs.h>

#define MAX_REPS 15
#define BLOCK ((size_t)1 << 20)
#define PAGE 4096
#define FUSE_MAGIC 0x65735546

/* The program's name, the prefix of its messages; each program defines it. */
extern const char *const bench_prog;

/* Blocks that read back wrong (and any other error the program counts). */
extern int failures;

/* Print "bench_prog: message" on stderr and exit 1. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* CLOCK_MONOTONIC in seconds. */
double now_s(void);

/* xorshift64: the next value of the sequence in *s. */
uint64_t xorshift(uint64_t *s);

/* open(path, flags, 0644), or die. */
int xopen(const char *path, int flags);

/* close(fd), or die. */
void xclose(int fd, const char *path);

/* Stamp a BLOCK-byte block so each one differs and a read can be checked cheaply. */
void stamp(char *b, uint64_t blockno);

/* Count a failure (and report the first five) if b is not stamped blockno. */
void check_stamp(const char *b, uint64_t blockno);

/* Write size bytes of stamped blocks from buf (one BLOCK) to fd, then fsync; or die. */
void write_stamped(int fd, const char *path, uint64_t size, char *buf);

/* Fraction of the file's pages (size bytes) in the page cache. */
double resident(int fd, uint64_t size);

/* Write 1 to /proc/sys/vm/drop_caches; a failure is reported, not fatal. */
void drop_page_cache(void);

/*
 * Drop the file's page cache: fsync, POSIX_FADV_DONTNEED, then drop_caches
 * if pages are still resident, checked with mincore.  Return: true if pages
 * stayed cached even so.  Not timed.
 */
bool drop_file_cache(int fd, uint64_t size);

/* The mount's bdi read-ahead, or -1 when it has none (tmpfs). */
long read_ahead_kb(const char *dir);

/* len bytes of fresh private anonymous memory (mmap), or die. */
void *map_anon(size_t len);

/*
 * Run fn(arg, i, n) on n threads at once, i = 0 .. n - 1, and wait for
 * them all.  The threads are started inside the timed span, as a program
 * would start them.  Return: seconds from the first start to the last end.
 */
double time_threads(unsigned n, void (*fn)(void *arg, unsigned i, unsigned n), void *arg);

/* qsort comparator for doubles. */
int cmp_double(const void *a, const void *b);

/* The median of v[0..n-1] (v is left as it is). */
double median(const double *v, int n);

/* A size argument: a number with an optional k, M or G, a multiple of BLOCK. */
uint64_t parse_size(const char *s);

/* The argument of option opt, a number from min to max, or die. */
long parse_count(const char *s, const char *opt, long min, long max);

/* Print the usage message on out; each program defines it. */
void usage(FILE *out);

/*
 * The options both programs take, for the default case of their getopt
 * switch: -r REPS (1 to MAX_REPS) into *reps, -v into *verbose, -h prints
 * the usage on stdout and exits 0; anything else prints it on stderr and
 * exits 1.
 */
void common_option(int opt, const char *arg, int *reps, bool *verbose);

/* There must be n operands after the options, else usage on stderr, exit 1. */
void expect_operands(int argc, int n);

/*
 * A directory operand: false if it is "-" (skipped); else statfs() it into
 * *sfs, or die.
 */
bool dir_operand(const char *arg, struct statfs *sfs);

/*
 * The head of a result table, then its rows: a row's name in a column of
 * name_w characters, its unit in one of unit_w, the value, the baseline and
 * their ratio: value / base when higher is better (a rate), else base /
 * value (a time), so that 1 is as fast as the baseline and less is slower.
 * A row without a baseline (base <= 0) prints dashes for both.
 */
void table_head(int name_w, int unit_w);
void table_row(int name_w, int unit_w, const char *row, const char *unit, double value,
	       double base, bool higher);

/* The exit status: 0, or 1 after "N what" on stderr if failures were counted. */
int exit_status(const char *what);

#endif
