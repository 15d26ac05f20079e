/* SPDX-License-Identifier: MIT */
/*
 * hmmctl: look at and move the pages of hmmfs files.
 *
 *   hmmctl devices MOUNTPOINT [--json]
 *   hmmctl residency FILE [--map] [--json] [--bytes]
 *   hmmctl migrate FILE --to host|devN [--offset N] [--length N]
 *   hmmctl stat PATH [--json] [--bytes]
 *
 * Everything goes through libhmm's wrappers of the hmmfs ioctls
 * (hmm_device_info, hmm_file_residency, hmm_file_migrate), so hmmctl sees
 * exactly what any other program of the mount's users would.
 *
 * Exit status: 0 success, 1 failure, 2 bad usage (util-linux conventions).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <hmm.h>

#define PROG "hmmctl"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* The width of --map when standard output is not a terminal. */
#define MAP_COLUMNS 64
/* hmmctl migrate moves this much per request when it shows a progress bar. */
#define MIGRATE_CHUNK (64ULL << 20)
/* ... and shows the bar only once a migration has taken this long. */
#define PROGRESS_DELAY_NS 1000000000LL

/* One character per device in --map: 64 devices at most (HMMFS_MAX_DEVICES);
 * 'H' is host RAM, so the capitals skip it. */
static const char device_marks[] =
	"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGIJKLMNOPQRSTUVWXYZ@%&";
#define MAP_HOLE '.'
#define MAP_HOST 'H'
#define MAP_MIXED '*'

/* ---- messages and usage ------------------------------------------------ */

static void __attribute__((format(printf, 1, 2))) warnx(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A command-line mistake: one line, a hint, exit status 2. */
static int __attribute__((format(printf, 1, 2))) usage_error(const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		fprintf(stderr, PROG ": ");
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	fprintf(stderr, "Try '" PROG " --help' for more information.\n");
	return EXIT_USAGE;
}

static void usage(void)
{
	fputs("Usage:\n"
	      " " PROG " <command> [options] <path>\n"
	      "\n"
	      "Show and move the pages of hmmfs files between host RAM and devices.\n"
	      "\n"
	      "Commands:\n"
	      " devices <mountpoint>            the devices of a mount and their counters\n"
	      " residency <file>                where each page of a file lives\n"
	      " migrate <file> --to <location>  move a range of a file's pages\n"
	      " stat <path>                     counters of a file, or of the whole mount\n"
	      "\n"
	      "Options:\n"
	      " -J, --json             print JSON (devices, residency, stat)\n"
	      " -b, --bytes            print sizes in bytes rather than in K, M, G units\n"
	      " -m, --map              residency: draw the file as a strip of characters\n"
	      " -t, --to <location>    migrate: host, or devN for device N\n"
	      " -o, --offset <size>    migrate: first byte of the range (default 0)\n"
	      " -l, --length <size>    migrate: bytes to move (default: to the end of file)\n"
	      "\n"
	      " -h, --help             display this help\n"
	      " -V, --version          display version\n"
	      "\n"
	      "Sizes take a K, M, G or T suffix (powers of 1024).\n"
	      "Run '" PROG " <command> --help' for one command, see hmmctl(1) for details.\n",
	      stdout);
}

static const char *const devices_usage =
	"Usage:\n"
	" " PROG " devices <mountpoint> [--json] [--bytes]\n"
	"\n"
	"List the simulated devices of an hmmfs mount: type, memory, migrations\n"
	"in and out, CPU faults, evictions and DMA engines.\n"
	"\n"
	"Options:\n"
	" -J, --json    print JSON\n"
	" -b, --bytes   print sizes in bytes\n"
	" -h, --help    display this help\n";

static const char *const residency_usage =
	"Usage:\n"
	" " PROG " residency <file> [--map] [--json] [--bytes]\n"
	"\n"
	"Show where each page of an hmmfs file lives: a hole, host RAM or a device.\n"
	"\n"
	"Options:\n"
	" -m, --map     draw the file as a strip of characters, one per page or per\n"
	"               group of pages: '.' hole, 'H' host, '0'-'9', 'a'-'z'... device,\n"
	"               '*' a group whose data lives in more than one place\n"
	" -J, --json    print JSON\n"
	" -b, --bytes   print sizes in bytes\n"
	" -h, --help    display this help\n";

static const char *const migrate_usage =
	"Usage:\n"
	" " PROG " migrate <file> --to host|devN [--offset <size>] [--length <size>]\n"
	"\n"
	"Move a range of an hmmfs file's pages (the whole file by default) to host\n"
	"RAM or to device N.  Holes stay holes.  The offset and length must be\n"
	"multiples of the mount's page size.\n"
	"\n"
	"Options:\n"
	" -t, --to <location>   host, or devN\n"
	" -o, --offset <size>   first byte of the range (default 0)\n"
	" -l, --length <size>   bytes to move (default: to the end of the file)\n"
	" -h, --help            display this help\n";

static const char *const stat_usage =
	"Usage:\n"
	" " PROG " stat <path> [--json] [--bytes]\n"
	"\n"
	"For a regular file: its size and how many of its pages are holes, in host\n"
	"RAM and on each device.  For a directory (such as the mount point): the\n"
	"whole mount, host memory and every device's counters.\n"
	"\n"
	"Options:\n"
	" -J, --json    print JSON\n"
	" -b, --bytes   print sizes in bytes\n"
	" -h, --help    display this help\n";

/* ---- formatting ----------------------------------------------------------- */

/*
 * Sizes for people: "0 B", "4 KiB", "1.5 MiB".  Exact multiples print
 * without a fraction so that page-aligned offsets stay readable.
 */
static const char *human(uint64_t v, bool bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned u = 0;

	if (bytes) {
		snprintf(buf, len, "%" PRIu64, v);
		return buf;
	}
	while (u + 1 < sizeof(units) / sizeof(units[0]) && v >= (1ULL << (10 * (u + 1))))
		u++;
	if (u == 0 || (v & ((1ULL << (10 * u)) - 1)) == 0)
		snprintf(buf, len, "%" PRIu64 " %s", v >> (10 * u), units[u]);
	else
		snprintf(buf, len, "%.1f %s", (double)v / (double)(1ULL << (10 * u)), units[u]);
	return buf;
}

static void json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* "hole", "host" or "devN". */
static const char *location_name(int loc, char *buf, size_t len)
{
	if (loc == HMM_LOC_HOLE)
		return "hole";
	if (loc == HMM_LOC_HOST)
		return "host";
	snprintf(buf, len, "dev%d", loc);
	return buf;
}

/*
 * A small table: cells are copied in row by row; columns are as wide as
 * their widest cell, text columns left-aligned, number columns right-aligned.
 */
#define TABLE_MAX_COLS 16
struct table {
	unsigned ncols;
	bool right[TABLE_MAX_COLS];
	char **cells; /* nrows * ncols, row 0 the header */
	size_t nrows, cap;
};

static void table_init(struct table *t, const char *const *header, const char *align)
{
	memset(t, 0, sizeof(*t));
	while (header[t->ncols])
		t->ncols++;
	for (unsigned c = 0; c < t->ncols; c++)
		t->right[c] = align[c] == 'r';
}

static void table_cell(struct table *t, size_t row, unsigned col, const char *text)
{
	if (row >= t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **cells = realloc(t->cells, cap * t->ncols * sizeof(*cells));

		if (!cells) {
			warnx("out of memory");
			exit(EXIT_FAIL);
		}
		memset(cells + t->cap * t->ncols, 0, (cap - t->cap) * t->ncols * sizeof(*cells));
		t->cells = cells;
		t->cap = cap;
	}
	if (row >= t->nrows)
		t->nrows = row + 1;
	t->cells[row * t->ncols + col] = strdup(text);
	if (!t->cells[row * t->ncols + col]) {
		warnx("out of memory");
		exit(EXIT_FAIL);
	}
}

static void table_row(struct table *t, const char *const *cells)
{
	size_t row = t->nrows;

	for (unsigned c = 0; c < t->ncols; c++)
		table_cell(t, row, c, cells[c]);
}

static void table_print_free(struct table *t)
{
	size_t width[TABLE_MAX_COLS] = { 0 };

	for (size_t r = 0; r < t->nrows; r++)
		for (unsigned c = 0; c < t->ncols; c++)
			if (strlen(t->cells[r * t->ncols + c]) > width[c])
				width[c] = strlen(t->cells[r * t->ncols + c]);
	for (size_t r = 0; r < t->nrows; r++) {
		for (unsigned c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];
			int w = (int)width[c];

			if (c + 1 == t->ncols && !t->right[c])
				printf("%s", s); /* no trailing blanks */
			else
				printf(t->right[c] ? "%*s" : "%-*s", w, s);
			if (c + 1 < t->ncols)
				fputs("  ", stdout);
			free(t->cells[r * t->ncols + c]);
		}
		putchar('\n');
	}
	free(t->cells);
}

/* ---- parsing -------------------------------------------------------------- */

/* A size: digits with an optional K, M, G or T suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
	unsigned shift = 0;
	char *end;
	unsigned long long v;

	if (!*s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	case 't': case 'T': shift = 40; break;
	default: return -EINVAL;
	}
	if (*end && end[1])
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

/* "host" or "devN"; the daemon decides whether device N exists. */
static int parse_location(const char *s, int *loc)
{
	char *end;
	long n;

	if (!strcmp(s, "host")) {
		*loc = HMM_LOC_HOST;
		return 0;
	}
	if (strncmp(s, "dev", 3) || s[3] < '0' || s[3] > '9')
		return -EINVAL;
	errno = 0;
	n = strtol(s + 3, &end, 10);
	if (errno || *end || n > INT32_MAX)
		return -EINVAL;
	*loc = (int)n;
	return 0;
}

/* ---- talking to the mount -------------------------------------------------- */

/* Report an errno from opening path. */
static int open_error(const char *path)
{
	warnx("cannot open %s: %s", path, strerror(errno));
	return EXIT_FAIL;
}

/* Report an error of an hmmfs ioctl on path that has no better explanation. */
static int ioctl_error(const char *path, int err)
{
	if (err == -ENOTTY)
		warnx("%s is not on an hmmfs mount", path);
	else
		warnx("%s: %s", path, strerror(-err));
	return EXIT_FAIL;
}

/*
 * Every device of the mount that fd is on.  Return: 0 with *devs (NULL if
 * none; free it) and *n, or a negative errno from hmm_device_info().
 */
static int load_devices(int fd, struct hmm_device_info **devs, unsigned *n)
{
	struct hmm_device_info *all = NULL, info;
	unsigned count = 0;
	int err;

	for (;;) {
		err = hmm_device_info(fd, count, &info);
		if (err == -ENODEV)
			break;
		if (err) {
			free(all);
			return err;
		}
		struct hmm_device_info *grown = realloc(all, (count + 1) * sizeof(*all));
		if (!grown) {
			free(all);
			return -ENOMEM;
		}
		all = grown;
		all[count++] = info;
	}
	*devs = all;
	*n = count;
	return 0;
}

/* The whole residency of a file, assembled from as many calls as it takes. */
struct layout {
	uint64_t size;
	uint32_t page_size;
	size_t n;
	struct hmm_residency_range *ranges;
};

static int load_layout(int fd, struct layout *l)
{
	struct hmm_residency *r = malloc(sizeof(*r));
	uint64_t offset = 0;
	size_t cap = 0;
	int err = 0;

	memset(l, 0, sizeof(*l));
	if (!r)
		return -ENOMEM;
	for (;;) {
		err = hmm_file_residency(fd, offset, r);
		if (err)
			break;
		l->size = r->size;
		l->page_size = r->page_size;
		if (l->n + r->count > cap) {
			size_t ncap = (cap ? cap * 2 : 256) + r->count;
			struct hmm_residency_range *grown = realloc(l->ranges, ncap * sizeof(*grown));

			if (!grown) {
				err = -ENOMEM;
				break;
			}
			l->ranges = grown;
			cap = ncap;
		}
		for (uint32_t i = 0; i < r->count; i++) {
			struct hmm_residency_range *last = l->n ? &l->ranges[l->n - 1] : NULL;

			/* Calls end at a range limit, not at a change of location. */
			if (last && last->location == r->ranges[i].location &&
			    last->offset + last->length == r->ranges[i].offset)
				last->length += r->ranges[i].length;
			else
				l->ranges[l->n++] = r->ranges[i];
		}
		/* The file may shrink meanwhile: then next is its new size. */
		if (r->next >= r->size || r->next <= offset)
			break;
		offset = r->next;
	}
	free(r);
	if (err) {
		free(l->ranges);
		l->ranges = NULL;
	}
	return err;
}

/* Pages of a range: a range that ends inside a page (at the size) counts it. */
static uint64_t range_pages(const struct hmm_residency_range *rg, uint32_t page_size)
{
	uint64_t end = rg->offset + rg->length;

	return (end + page_size - 1) / page_size - rg->offset / page_size;
}

/* Open path for reading, as a regular file on hmmfs.  Return: fd, or -1 after a message. */
static int open_file(const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		open_error(path);
		return -1;
	}
	if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		warnx("%s is not a regular file", path);
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- devices ------------------------------------------------------------------ */

static void json_device(const struct hmm_device_info *d)
{
	printf("{\"index\": %u, \"name\": \"dev%u\", \"type\": \"%s\", \"numa_node\": %d, "
	       "\"capacity\": %" PRIu64 ", \"used\": %" PRIu64 ", "
	       "\"pages_in\": %" PRIu64 ", \"bytes_in\": %" PRIu64 ", "
	       "\"pages_out\": %" PRIu64 ", \"bytes_out\": %" PRIu64 ", "
	       "\"cpu_faults\": %" PRIu64 ", \"evictions\": %" PRIu64 ", "
	       "\"dma_engines\": %u, \"dma_bw\": %" PRIu64 ", \"dma_latency_ns\": %" PRIu64 ", "
	       "\"dma_busy_ns\": %" PRIu64 "}",
	       d->index, d->index, d->type == HMM_DEVICE_COHERENT ? "coherent" : "private",
	       d->numa_node, d->capacity, d->used, d->pages_in, d->bytes_in, d->pages_out,
	       d->bytes_out, d->cpu_faults, d->evictions, d->dma_engines, d->dma_bw,
	       d->dma_latency_ns, d->dma_busy_ns);
}

static void json_devices(const struct hmm_device_info *devs, unsigned n)
{
	printf("[");
	for (unsigned i = 0; i < n; i++) {
		printf(i ? ",\n    " : "\n    ");
		json_device(&devs[i]);
	}
	printf(n ? "\n  ]" : "]");
}

/* Nanoseconds for people: "0", "850 us", "1.25 s". */
static const char *duration(uint64_t ns, char *buf, size_t len)
{
	if (ns == 0)
		snprintf(buf, len, "0");
	else if (ns < 1000)
		snprintf(buf, len, "%" PRIu64 " ns", ns);
	else if (ns < 1000000)
		snprintf(buf, len, "%.3g us", (double)ns / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, len, "%.3g ms", (double)ns / 1e6);
	else
		snprintf(buf, len, "%.3g s", (double)ns / 1e9);
	return buf;
}

static void table_devices(const struct hmm_device_info *devs, unsigned n, bool bytes)
{
	static const char *const header[] = { "DEVICE", "TYPE", "CAPACITY", "USED",
		"PAGES-IN", "BYTES-IN", "PAGES-OUT", "BYTES-OUT", "CPU-FAULTS", "EVICTIONS",
		"DMA", "BANDWIDTH", "LATENCY", "DMA-BUSY", NULL };
	struct table t;

	table_init(&t, header, "llrrrrrrrrrrrr");
	table_row(&t, header);
	for (unsigned i = 0; i < n; i++) {
		const struct hmm_device_info *d = &devs[i];
		char c[14][48];
		const char *row[14];

		snprintf(c[0], 48, "dev%u", d->index);
		snprintf(c[1], 48, "%s", d->type == HMM_DEVICE_COHERENT ? "coherent" : "private");
		human(d->capacity, bytes, c[2], 48);
		human(d->used, bytes, c[3], 48);
		snprintf(c[4], 48, "%" PRIu64, d->pages_in);
		human(d->bytes_in, bytes, c[5], 48);
		snprintf(c[6], 48, "%" PRIu64, d->pages_out);
		human(d->bytes_out, bytes, c[7], 48);
		snprintf(c[8], 48, "%" PRIu64, d->cpu_faults);
		snprintf(c[9], 48, "%" PRIu64, d->evictions);
		snprintf(c[10], 48, "%u", d->dma_engines);
		if (d->dma_bw) {
			human(d->dma_bw, bytes, c[11], 44);
			strcat(c[11], "/s");
		} else {
			snprintf(c[11], 48, "unlimited");
		}
		duration(d->dma_latency_ns, c[12], 48);
		duration(d->dma_busy_ns, c[13], 48);
		for (int k = 0; k < 14; k++)
			row[k] = c[k];
		table_row(&t, row);
	}
	table_print_free(&t);
}

static int cmd_devices(const char *path, bool json, bool bytes)
{
	struct hmm_device_info *devs;
	unsigned n;
	int fd, err;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return open_error(path);
	err = load_devices(fd, &devs, &n);
	close(fd);
	if (err)
		return ioctl_error(path, err);
	if (json) {
		printf("{\"devices\": ");
		json_devices(devs, n);
		printf("}\n");
	} else if (n == 0) {
		printf("%s has no devices (mount it with -o devices=N)\n", path);
	} else {
		table_devices(devs, n, bytes);
	}
	free(devs);
	return EXIT_OK;
}

/* ---- residency ------------------------------------------------------------------ */

static int map_columns(void)
{
	struct winsize ws;

	if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 8)
		return ws.ws_col;
	return MAP_COLUMNS;
}

static char location_mark(int loc)
{
	if (loc == HMM_LOC_HOLE)
		return MAP_HOLE;
	if (loc == HMM_LOC_HOST)
		return MAP_HOST;
	if (loc >= 0 && loc < (int)sizeof(device_marks) - 1)
		return device_marks[loc];
	return '?';
}

/*
 * The map: group k covers pages [k * per, (k + 1) * per).  A group shows
 * the one place its data lives ('.' only if every page is a hole: data
 * matters more than holes), or '*' when its data lives in several places.
 * Return: a malloc'ed string of *ngroups characters.
 */
static char *build_map(const struct layout *l, uint64_t npages, uint64_t per, uint64_t *ngroups)
{
	char *map;

	*ngroups = (npages + per - 1) / per;
	map = malloc(*ngroups + 1);
	if (!map)
		return NULL;
	memset(map, MAP_HOLE, *ngroups);
	map[*ngroups] = '\0';
	for (size_t i = 0; i < l->n; i++) {
		const struct hmm_residency_range *rg = &l->ranges[i];
		uint64_t first = rg->offset / l->page_size;
		uint64_t last = first + range_pages(rg, l->page_size);
		char mark = location_mark(rg->location);

		if (rg->location == HMM_LOC_HOLE || last == first)
			continue;
		for (uint64_t g = first / per; g <= (last - 1) / per; g++) {
			if (map[g] == MAP_HOLE)
				map[g] = mark;
			else if (map[g] != mark)
				map[g] = MAP_MIXED;
		}
	}
	return map;
}

static void print_map(const char *path, const struct layout *l, bool bytes)
{
	uint64_t npages = (l->size + l->page_size - 1) / l->page_size;
	uint64_t cols = (uint64_t)map_columns(), per, ngroups;
	char a[32], b[32], c[32];
	bool seen[128] = { false };
	char *map;

	printf("%s: %s in %" PRIu64 " page%s of %s", path, human(l->size, bytes, a, sizeof(a)),
	       npages, npages == 1 ? "" : "s", human(l->page_size, bytes, b, sizeof(b)));
	if (npages == 0) {
		printf("; empty file\n");
		return;
	}
	per = (npages + cols - 1) / cols;
	map = build_map(l, npages, per, &ngroups);
	if (!map) {
		printf("\n");
		warnx("out of memory");
		return;
	}
	if (per == 1)
		printf(", 1 page per character\n");
	else
		printf(", %" PRIu64 " pages (%s) per character\n", per,
		       human(per * l->page_size, bytes, c, sizeof(c)));
	printf("%s\n", map);
	/* A scale: 0 under the first character, the size under the last. */
	human(l->size, bytes, a, sizeof(a));
	if (ngroups > strlen(a) + 2)
		printf("0%*s\n", (int)(ngroups - 1), a);
	for (const char *p = map; *p; p++)
		seen[(unsigned char)*p] = true;
	/* The legend names only what the map shows, in a fixed order. */
	const char *sep = "";
	if (seen[MAP_HOLE]) {
		printf("%s%c hole", sep, MAP_HOLE);
		sep = "  ";
	}
	if (seen[MAP_HOST]) {
		printf("%s%c host", sep, MAP_HOST);
		sep = "  ";
	}
	for (int d = 0; device_marks[d]; d++) {
		if (seen[(unsigned char)device_marks[d]]) {
			printf("%s%c dev%d", sep, device_marks[d], d);
			sep = "  ";
		}
	}
	if (seen[MAP_MIXED])
		printf("%s%c mixed", sep, MAP_MIXED);
	printf("\n");
	free(map);
}

static int cmd_residency(const char *path, bool json, bool map, bool bytes)
{
	struct layout l;
	char loc[16], a[32], b[32], c[32];
	int fd = open_file(path), err;

	if (fd < 0)
		return EXIT_FAIL;
	err = load_layout(fd, &l);
	close(fd);
	if (err)
		return ioctl_error(path, err);
	if (json) {
		printf("{\"size\": %" PRIu64 ", \"page_size\": %" PRIu32 ", \"ranges\": [",
		       l.size, l.page_size);
		for (size_t i = 0; i < l.n; i++)
			printf("%s\n  {\"offset\": %" PRIu64 ", \"length\": %" PRIu64
			       ", \"location\": \"%s\"}", i ? "," : "", l.ranges[i].offset,
			       l.ranges[i].length, location_name(l.ranges[i].location, loc, sizeof(loc)));
		printf(l.n ? "\n]}\n" : "]}\n");
	} else if (map) {
		print_map(path, &l, bytes);
	} else if (l.n == 0) {
		printf("%s is empty\n", path);
	} else {
		static const char *const header[] = { "OFFSET", "LENGTH", "PAGES", "LOCATION", NULL };
		struct table t;

		table_init(&t, header, "rrrl");
		table_row(&t, header);
		for (size_t i = 0; i < l.n; i++) {
			const char *row[4];

			snprintf(c, sizeof(c), "%" PRIu64, range_pages(&l.ranges[i], l.page_size));
			/* "0", not "0 B": an offset is a position more than an amount. */
			row[0] = l.ranges[i].offset ? human(l.ranges[i].offset, bytes, a, sizeof(a)) : "0";
			row[1] = human(l.ranges[i].length, bytes, b, sizeof(b));
			row[2] = c;
			row[3] = location_name(l.ranges[i].location, loc, sizeof(loc));
			table_row(&t, row);
		}
		table_print_free(&t);
	}
	free(l.ranges);
	return EXIT_OK;
}

/* ---- migrate ---------------------------------------------------------------------- */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void progress(const char *to, uint64_t done, uint64_t total)
{
	struct winsize ws;
	int cols = 80, bar;
	char a[32], b[32], text[96];
	unsigned pct = total ? (unsigned)(done * 100 / total) : 100;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
		cols = ws.ws_col;
	snprintf(text, sizeof(text), " %3u%%  %s / %s", pct, human(done, false, a, sizeof(a)),
		 human(total, false, b, sizeof(b)));
	bar = cols - 1 - (int)strlen("migrating to ") - (int)strlen(to) - 3 - (int)strlen(text);
	if (bar > 50)
		bar = 50;
	if (bar < 10)
		bar = 10;
	fprintf(stderr, "\rmigrating to %s [", to);
	for (int i = 0; i < bar; i++)
		fputc(i < (int)((uint64_t)bar * pct / 100) ? '#' : '-', stderr);
	fprintf(stderr, "]%s\033[K", text); /* erase what a longer line left */
	fflush(stderr);
}

/*
 * Whether dest has room now for every page of [offset, end) that a move
 * would bring there.  Moving chunk by chunk could otherwise run out of room
 * half-way, which one request for the whole range never does: the daemon
 * refuses it before moving anything.
 */
static bool room_for(int fd, const struct layout *l, uint64_t offset, uint64_t end, int dest)
{
	struct hmm_device_info info;
	struct statvfs sv;
	uint64_t need = 0, room;

	if (dest == HMM_LOC_HOST) {
		if (fstatvfs(fd, &sv) < 0)
			return false;
		room = (uint64_t)sv.f_bfree * sv.f_frsize;
	} else {
		if (hmm_device_info(fd, (unsigned)dest, &info))
			return false;
		room = info.capacity - info.used;
	}
	for (size_t i = 0; i < l->n; i++) {
		const struct hmm_residency_range *rg = &l->ranges[i];
		uint64_t s = rg->offset > offset ? rg->offset : offset;
		uint64_t e = rg->offset + rg->length < end ? rg->offset + rg->length : end;

		if (rg->location == HMM_LOC_HOLE || rg->location == dest || s >= e)
			continue;
		need += (e + l->page_size - 1) / l->page_size - s / l->page_size;
	}
	return need * l->page_size <= room;
}

/*
 * On a terminal, move [offset, stop) chunk by chunk and draw a progress bar
 * once it takes more than a second.  Return: 0 or a negative errno, with
 * what was moved added up in *total.
 */
static int migrate_chunks(int fd, const char *to, int dest, uint64_t offset, uint64_t stop,
			  struct hmm_migrate *total)
{
	int64_t start = now_ns();
	struct hmm_migrate part;
	bool bar = false;
	int err = 0;

	for (uint64_t at = offset; at < stop; at += MIGRATE_CHUNK) {
		uint64_t n = stop - at < MIGRATE_CHUNK ? stop - at : MIGRATE_CHUNK;

		err = hmm_file_migrate(fd, at, n, dest, &part);
		if (err)
			break;
		total->moved += part.moved;
		total->skipped += part.skipped;
		if (!bar && now_ns() - start > PROGRESS_DELAY_NS)
			bar = true;
		if (bar)
			progress(to, at + n - offset, stop - offset);
	}
	if (bar)
		fputc('\n', stderr);
	return err;
}

static int cmd_migrate(const char *path, const char *to, int dest, uint64_t offset,
		       bool have_length, uint64_t length)
{
	struct hmm_migrate total = { 0 };
	struct stat st;
	uint64_t page_size;
	bool chunked = false;
	char a[32];
	int fd, err = 0;

	fd = open_file(path);
	if (fd < 0)
		return EXIT_FAIL;
	if (fstat(fd, &st) < 0) {
		warnx("%s: %s", path, strerror(errno));
		close(fd);
		return EXIT_FAIL;
	}
	/* hmmfs reports its page size as st_blksize. */
	page_size = st.st_blksize > 0 ? (uint64_t)st.st_blksize : 4096;

	/*
	 * Chunks only for a large, valid range that fits where it goes, so the
	 * outcome is the one a single request would have; anything the daemon
	 * refuses is refused by the single request below.
	 */
	if (isatty(STDERR_FILENO) && offset % page_size == 0 && length % page_size == 0 &&
	    (!have_length || length <= UINT64_MAX - offset)) {
		uint64_t eof = ((uint64_t)st.st_size + page_size - 1) / page_size * page_size;
		uint64_t stop = have_length && length && offset + length < eof ? offset + length : eof;
		struct layout l;

		if (stop > offset && stop - offset > MIGRATE_CHUNK && load_layout(fd, &l) == 0) {
			chunked = room_for(fd, &l, offset, stop, dest);
			free(l.ranges);
		}
		if (chunked)
			err = migrate_chunks(fd, to, dest, offset, stop, &total);
	}
	if (!chunked)
		err = hmm_file_migrate(fd, offset, length, dest, &total);
	close(fd);
	switch (err) {
	case 0:
		printf("moved %" PRIu64 " page%s (%s) to %s, %" PRIu64 " already there\n",
		       total.moved, total.moved == 1 ? "" : "s",
		       human(total.moved * page_size, false, a, sizeof(a)), to, total.skipped);
		return EXIT_OK;
	case -ENODEV:
		warnx("no device %s on this mount", to);
		break;
	case -ENOSPC:
		if (dest == HMM_LOC_HOST)
			warnx("not enough room in host memory (host_mem)");
		else
			warnx("not enough room on %s; nothing was moved", to);
		if (total.moved)
			warnx("%" PRIu64 " pages had been moved before that", total.moved);
		break;
	case -EINVAL:
		if (offset % page_size)
			warnx("offset %" PRIu64 " must be a multiple of the page size (%" PRIu64 ")",
			      offset, page_size);
		else if (length % page_size)
			warnx("length %" PRIu64 " must be a multiple of the page size (%" PRIu64 ")",
			      length, page_size);
		else
			warnx("%s: invalid range (offset %" PRIu64 ", length %" PRIu64 ")", path,
			      offset, length);
		break;
	case -ENOTTY:
		warnx("%s is not on an hmmfs mount", path);
		break;
	default:
		warnx("%s: %s", path, strerror(-err));
		break;
	}
	return EXIT_FAIL;
}

/* ---- stat ------------------------------------------------------------------------- */

struct place {
	uint64_t pages, bytes;
};

static int stat_file(const char *path, int fd, bool json, bool bytes)
{
	struct hmm_file_stat fst;
	struct hmm_device_info *devs = NULL;
	struct place hole = { 0 }, host = { 0 }, *dev = NULL;
	struct layout l;
	unsigned ndevs = 0;
	char a[32], b[32], loc[16];
	int err;

	err = load_layout(fd, &l);
	if (!err)
		err = load_devices(fd, &devs, &ndevs);
	if (!err)
		err = hmm_file_stat(fd, &fst);
	if (err) {
		free(l.ranges);
		free(devs);
		return ioctl_error(path, err);
	}
	dev = calloc(ndevs + 1, sizeof(*dev));
	if (!dev) {
		warnx("out of memory");
		free(l.ranges);
		free(devs);
		return EXIT_FAIL;
	}
	for (size_t i = 0; i < l.n; i++) {
		const struct hmm_residency_range *rg = &l.ranges[i];
		struct place *p = rg->location == HMM_LOC_HOLE ? &hole
				  : rg->location == HMM_LOC_HOST ? &host
				  : rg->location >= 0 && (unsigned)rg->location < ndevs ? &dev[rg->location]
				  : NULL;

		if (p) {
			p->pages += range_pages(rg, l.page_size);
			p->bytes += rg->length;
		}
	}
	if (json) {
		printf("{\"path\": ");
		json_string(path);
		printf(", \"type\": \"file\", \"size\": %" PRIu64 ", \"page_size\": %" PRIu32
		       ", \"pages\": %" PRIu64 ",\n",
		       l.size, l.page_size, (l.size + l.page_size - 1) / l.page_size);
		printf("  \"hole\": {\"pages\": %" PRIu64 ", \"bytes\": %" PRIu64 "},\n"
		       "  \"host\": {\"pages\": %" PRIu64 ", \"bytes\": %" PRIu64 "},\n"
		       "  \"devices\": [", hole.pages, hole.bytes, host.pages, host.bytes);
		for (unsigned i = 0; i < ndevs; i++)
			printf("%s{\"index\": %u, \"name\": \"dev%u\", \"pages\": %" PRIu64
			       ", \"bytes\": %" PRIu64 "}", i ? ", " : "", i, i, dev[i].pages,
			       dev[i].bytes);
		printf("],\n  \"counters\": {\"pages_to_device\": %" PRIu64
		       ", \"bytes_to_device\": %" PRIu64 ", \"pages_to_host\": %" PRIu64
		       ", \"bytes_to_host\": %" PRIu64 ", \"cpu_faults\": %" PRIu64
		       ", \"evictions\": %" PRIu64 "}}\n",
		       fst.pages_to_device, fst.bytes_to_device, fst.pages_to_host,
		       fst.bytes_to_host, fst.cpu_faults, fst.evictions);
	} else {
		static const char *const header[] = { "LOCATION", "PAGES", "BYTES", NULL };
		struct table t;
		const char *row[3];
		char p[32];

		printf("File: %s\n", path);
		printf("Size: %s", human(l.size, bytes, a, sizeof(a)));
		if (!bytes)
			printf(" (%" PRIu64 " bytes)", l.size);
		printf(", %" PRIu64 " pages of %s\n\n", (l.size + l.page_size - 1) / l.page_size,
		       human(l.page_size, bytes, b, sizeof(b)));
		table_init(&t, header, "lrr");
		table_row(&t, header);
		for (int k = -2; k < (int)ndevs; k++) {
			const struct place *pl = k == -2 ? &hole : k == -1 ? &host : &dev[k];

			snprintf(p, sizeof(p), "%" PRIu64, pl->pages);
			row[0] = location_name(k, loc, sizeof(loc));
			row[1] = p;
			row[2] = human(pl->bytes, bytes, a, sizeof(a));
			table_row(&t, row);
		}
		table_print_free(&t);
		printf("\nMigrated to devices: %" PRIu64 " pages (%s)\n", fst.pages_to_device,
		       human(fst.bytes_to_device, bytes, a, sizeof(a)));
		printf("Migrated to host:    %" PRIu64 " pages (%s), of which CPU faults %" PRIu64
		       ", evictions %" PRIu64 "\n", fst.pages_to_host,
		       human(fst.bytes_to_host, bytes, b, sizeof(b)), fst.cpu_faults, fst.evictions);
	}
	free(dev);
	free(devs);
	free(l.ranges);
	return EXIT_OK;
}

static int stat_mount(const char *path, int fd, bool json, bool bytes)
{
	struct hmm_device_info *devs;
	struct statvfs sv;
	unsigned ndevs;
	uint64_t cap, used, avail;
	char a[32], b[32], c[32];
	int err;

	/* hmm_device_info answers ENOTTY off hmmfs; statfs would not tell. */
	err = load_devices(fd, &devs, &ndevs);
	if (err)
		return ioctl_error(path, err);
	if (fstatvfs(fd, &sv) < 0) {
		warnx("%s: statfs: %s", path, strerror(errno));
		free(devs);
		return EXIT_FAIL;
	}
	cap = (uint64_t)sv.f_blocks * sv.f_frsize;
	used = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (json) {
		printf("{\"path\": ");
		json_string(path);
		printf(", \"type\": \"mount\", \"page_size\": %lu,\n"
		       "  \"host\": {\"capacity\": %" PRIu64 ", \"used\": %" PRIu64
		       ", \"free\": %" PRIu64 "},\n"
		       "  \"inodes\": {\"total\": %" PRIu64 ", \"used\": %" PRIu64
		       ", \"free\": %" PRIu64 "},\n  \"devices\": ",
		       sv.f_bsize, cap, used, avail, (uint64_t)sv.f_files,
		       (uint64_t)(sv.f_files - sv.f_ffree), (uint64_t)sv.f_ffree);
		json_devices(devs, ndevs);
		printf("}\n");
	} else {
		printf("Mount: %s\n", path);
		printf("Page size: %s\n", human(sv.f_bsize, bytes, a, sizeof(a)));
		printf("Host memory: %s used of %s, %s free\n", human(used, bytes, a, sizeof(a)),
		       human(cap, bytes, b, sizeof(b)), human(avail, bytes, c, sizeof(c)));
		printf("Inodes: %" PRIu64 " used of %" PRIu64 ", %" PRIu64 " free\n",
		       (uint64_t)(sv.f_files - sv.f_ffree), (uint64_t)sv.f_files,
		       (uint64_t)sv.f_ffree);
		if (ndevs == 0) {
			printf("Devices: none\n");
		} else {
			printf("Devices: %u\n\n", ndevs);
			table_devices(devs, ndevs, bytes);
		}
	}
	free(devs);
	return EXIT_OK;
}

static int cmd_stat(const char *path, bool json, bool bytes)
{
	struct stat st;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return open_error(path);
	if (fstat(fd, &st) < 0) {
		warnx("%s: %s", path, strerror(errno));
		close(fd);
		return EXIT_FAIL;
	}
	if (S_ISREG(st.st_mode)) {
		ret = stat_file(path, fd, json, bytes);
	} else if (S_ISDIR(st.st_mode)) {
		ret = stat_mount(path, fd, json, bytes);
	} else {
		warnx("%s is neither a regular file nor a directory", path);
		ret = EXIT_FAIL;
	}
	close(fd);
	return ret;
}

/* ---- command line ------------------------------------------------------------------- */

enum command { CMD_DEVICES, CMD_RESIDENCY, CMD_MIGRATE, CMD_STAT };

/* Short options start with ':' so that a missing argument is told apart. */
static const struct {
	const char *name;
	const char *shortopts;
} commands[] = {
	[CMD_DEVICES] = { "devices", ":Jbh" },
	[CMD_RESIDENCY] = { "residency", ":Jbmh" },
	[CMD_MIGRATE] = { "migrate", ":t:o:l:h" },
	[CMD_STAT] = { "stat", ":Jbh" },
};

static const char *command_help(enum command c)
{
	switch (c) {
	case CMD_DEVICES: return devices_usage;
	case CMD_RESIDENCY: return residency_usage;
	case CMD_MIGRATE: return migrate_usage;
	case CMD_STAT: return stat_usage;
	}
	return "";
}

static const struct option command_longopts[] = {
	{ "json", no_argument, NULL, 'J' },
	{ "bytes", no_argument, NULL, 'b' },
	{ "map", no_argument, NULL, 'm' },
	{ "to", required_argument, NULL, 't' },
	{ "offset", required_argument, NULL, 'o' },
	{ "length", required_argument, NULL, 'l' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

/* getopt's complaint about argv[optind - 1], as one line of ours. */
static int bad_option(int c, char **argv)
{
	const char *arg = argv[optind - 1];

	if (c == ':')
		return usage_error("option '%s' requires an argument", arg);
	if (!strncmp(arg, "--", 2)) {
		if (optopt && strchr(arg, '='))
			return usage_error("option '%.*s' doesn't allow an argument",
					   (int)(strchr(arg, '=') - arg), arg);
		return usage_error("unrecognized option '%s'", arg);
	}
	return usage_error("invalid option -- '%c'", optopt);
}

static int run_command(enum command cmd, int argc, char **argv)
{
	bool json = false, bytes = false, map = false, have_length = false;
	const char *to = NULL, *path = NULL, *offset_arg = NULL, *length_arg = NULL;
	uint64_t offset = 0, length = 0;
	int c, dest = 0;

	optind = 0; /* glibc: start afresh on the command's own arguments */
	opterr = 0;
	/* Options and the operand may come in any order (getopt permutes). */
	while ((c = getopt_long(argc, argv, commands[cmd].shortopts, command_longopts, NULL)) != -1) {
		/* A long option that exists but not for this command. */
		if (c != '?' && c != ':' && c != 'h' && !strchr(commands[cmd].shortopts, c))
			return usage_error("%s: option '%s' does not apply to this command",
					   commands[cmd].name, argv[optind - 1]);
		switch (c) {
		case 'J': json = true; break;
		case 'b': bytes = true; break;
		case 'm': map = true; break;
		case 't': to = optarg; break;
		case 'o': offset_arg = optarg; break;
		case 'l': length_arg = optarg; break;
		case 'h':
			fputs(command_help(cmd), stdout);
			return EXIT_OK;
		default:
			return bad_option(c, argv);
		}
	}
	if (optind < argc)
		path = argv[optind++];
	if (optind < argc)
		return usage_error("%s: unexpected argument '%s'", commands[cmd].name, argv[optind]);
	if (!path)
		return usage_error("%s: no %s given", commands[cmd].name,
				   cmd == CMD_DEVICES ? "mount point" :
				   cmd == CMD_STAT ? "path" : "file");
	switch (cmd) {
	case CMD_DEVICES:
		return cmd_devices(path, json, bytes);
	case CMD_RESIDENCY:
		if (json && map)
			return usage_error("residency: --map and --json cannot be used together");
		return cmd_residency(path, json, map, bytes);
	case CMD_STAT:
		return cmd_stat(path, json, bytes);
	case CMD_MIGRATE:
		break;
	}
	if (!to)
		return usage_error("migrate: no destination given (--to host or --to devN)");
	if (parse_location(to, &dest))
		return usage_error("invalid destination '%s': expected host or devN", to);
	if (offset_arg && parse_size(offset_arg, &offset))
		return usage_error("invalid offset '%s': expected a size such as 4096 or 2M",
				   offset_arg);
	if (length_arg) {
		if (parse_size(length_arg, &length))
			return usage_error("invalid length '%s': expected a size such as 4096 or 2M",
					   length_arg);
		have_length = true;
	}
	return cmd_migrate(path, to, dest, offset, have_length, length);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int c;

	opterr = 0;
	/* '+': options after the command belong to the command. */
	while ((c = getopt_long(argc, argv, "+:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage();
			return EXIT_OK;
		case 'V':
			printf(PROG " from hmmfs %s\n", PACKAGE_VERSION);
			return EXIT_OK;
		default:
			return bad_option(c, argv);
		}
	}
	if (optind >= argc)
		return usage_error("no command given");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[optind], commands[i].name))
			return run_command((enum command)i, argc - optind, argv + optind);
	return usage_error("unknown command '%s'", argv[optind]);
}
