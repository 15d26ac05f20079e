/* SPDX-License-Identifier: MIT */
/*
 * A sparse 64-way radix tree from uint64_t indices to pointers.
 *
 * The tree grows upward: when an index does not fit under the current root,
 * new roots are stacked on top, the old root becoming child 0.  Interior
 * nodes count their non-empty slots so that deletion can free nodes that
 * become empty on the way back up.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RADIX_BITS 6
#define RADIX_SLOTS (1u << RADIX_BITS)
#define RADIX_MASK (RADIX_SLOTS - 1)
#define RADIX_MAX_HEIGHT ((64 + RADIX_BITS - 1) / RADIX_BITS)

struct radix_node {
	unsigned count; /* non-NULL slots */
	void *slot[RADIX_SLOTS];
};

static unsigned shift_of(unsigned level)
{
	return level * RADIX_BITS;
}

/* Can a tree of this height hold index? */
static bool fits(unsigned height, uint64_t index)
{
	if (height == 0)
		return false;
	if (shift_of(height) >= 64)
		return true;
	return (index >> shift_of(height)) == 0;
}

void hmm__radix_init(struct hmm__radix *r)
{
	r->root = NULL;
	r->height = 0;
	r->count = 0;
}

void *hmm__radix_lookup(const struct hmm__radix *r, uint64_t index)
{
	struct radix_node *node = r->root;

	if (!fits(r->height, index))
		return NULL;
	for (unsigned level = r->height - 1; node; level--) {
		void *next = node->slot[(index >> shift_of(level)) & RADIX_MASK];
		if (level == 0)
			return next;
		node = next;
	}
	return NULL;
}

int hmm__radix_insert(struct hmm__radix *r, uint64_t index, void *item)
{
	struct radix_node *node;

	HMM_ASSERT(item);
	if (!r->root) {
		unsigned h = 1;
		while (!fits(h, index))
			h++;
		r->root = hmm__calloc(1, sizeof(struct radix_node));
		if (!r->root)
			return -ENOMEM;
		r->height = h;
	}
	while (!fits(r->height, index)) {
		struct radix_node *top = hmm__calloc(1, sizeof(*top));
		if (!top)
			return -ENOMEM;
		top->slot[0] = r->root;
		top->count = 1;
		r->root = top;
		r->height++;
	}
	node = r->root;
	for (unsigned level = r->height - 1; level > 0; level--) {
		unsigned i = (index >> shift_of(level)) & RADIX_MASK;
		if (!node->slot[i]) {
			node->slot[i] = hmm__calloc(1, sizeof(struct radix_node));
			if (!node->slot[i])
				return -ENOMEM; /* the empty path left behind is harmless */
			node->count++;
		}
		node = node->slot[i];
	}
	if (node->slot[index & RADIX_MASK])
		return -EEXIST;
	node->slot[index & RADIX_MASK] = item;
	node->count++;
	r->count++;
	return 0;
}

void *hmm__radix_delete(struct hmm__radix *r, uint64_t index)
{
	struct radix_node *path[RADIX_MAX_HEIGHT];
	struct radix_node *node = r->root;
	void *item;
	unsigned level;

	if (!fits(r->height, index))
		return NULL;
	for (level = r->height - 1; level > 0; level--) {
		path[level] = node;
		node = node->slot[(index >> shift_of(level)) & RADIX_MASK];
		if (!node)
			return NULL;
	}
	path[0] = node;
	item = node->slot[index & RADIX_MASK];
	if (!item)
		return NULL;
	r->count--;
	/* Clear the slot, then free every node the removal leaves empty. */
	for (level = 0; level < r->height; level++) {
		node = path[level];
		node->slot[(index >> shift_of(level)) & RADIX_MASK] = NULL;
		if (--node->count > 0)
			break;
		hmm__free(node);
		if (level == r->height - 1) {
			r->root = NULL;
			r->height = 0;
			break;
		}
	}
	return item;
}

static void *next_in(struct radix_node *node, unsigned level, uint64_t *index)
{
	uint64_t start = *index;

	for (unsigned i = (start >> shift_of(level)) & RADIX_MASK; i < RADIX_SLOTS; i++) {
		void *slot = node->slot[i];
		uint64_t base;

		if (!slot)
			continue;
		/* The index of slot i at this level, keeping the bits above it. */
		base = shift_of(level + 1) >= 64 ? 0 : start >> shift_of(level + 1) << shift_of(level + 1);
		base |= (uint64_t)i << shift_of(level);
		if (level == 0) {
			*index = base;
			return slot;
		}
		if (base < start)
			base = start; /* the first slot: begin inside it */
		void *found = next_in(slot, level - 1, &base);
		if (found) {
			*index = base;
			return found;
		}
	}
	return NULL;
}

void *hmm__radix_next(const struct hmm__radix *r, uint64_t *index)
{
	uint64_t at = *index;
	void *found;

	if (!r->root || !fits(r->height, at))
		return NULL;
	found = next_in(r->root, r->height - 1, &at);
	if (found)
		*index = at;
	return found;
}

/* The leaf node covering index, or NULL. */
static struct radix_node *leaf_of(const struct hmm__radix *r, uint64_t index)
{
	struct radix_node *node = r->root;

	if (!fits(r->height, index))
		return NULL;
	for (unsigned level = r->height - 1; node && level > 0; level--)
		node = node->slot[(index >> shift_of(level)) & RADIX_MASK];
	return node;
}

size_t hmm__radix_gang(const struct hmm__radix *r, uint64_t *index, uint64_t end,
		       void **items, uint64_t *indices, size_t max)
{
	uint64_t at = *index;
	size_t n = 0;

	/* One descent per leaf: find the next item, then scan its leaf. */
	while (n < max && at < end) {
		struct radix_node *leaf;
		uint64_t base;

		if (!hmm__radix_next(r, &at) || at >= end) {
			at = end;
			break;
		}
		leaf = leaf_of(r, at);
		base = at & ~(uint64_t)RADIX_MASK;
		for (unsigned i = at & RADIX_MASK; i < RADIX_SLOTS; i++) {
			uint64_t idx = base + i;

			if (idx >= end) {
				at = end;
				goto out;
			}
			if (n == max) {
				at = idx;
				goto out;
			}
			if (leaf->slot[i]) {
				items[n] = leaf->slot[i];
				indices[n++] = idx;
			}
		}
		at = base + RADIX_SLOTS;
		if (at == 0) {
			at = end; /* past the last leaf of the index space */
			break;
		}
	}
out:
	*index = at;
	return n;
}

static void free_nodes(struct radix_node *node, unsigned level)
{
	for (unsigned i = 0; level > 0 && i < RADIX_SLOTS; i++)
		if (node->slot[i])
			free_nodes(node->slot[i], level - 1);
	hmm__free(node);
}

void hmm__radix_truncate(struct hmm__radix *r, uint64_t first,
			 void (*fn)(void *item, void *arg), void *arg)
{
	uint64_t at = first;
	void *item;

	while ((item = hmm__radix_next(r, &at)) != NULL) {
		hmm__radix_delete(r, at);
		if (fn)
			fn(item, arg);
		if (at == UINT64_MAX)
			break;
		at++;
	}
	/* An insertion that failed for memory can leave empty nodes behind. */
	if (first == 0 && r->root) {
		free_nodes(r->root, r->height - 1);
		hmm__radix_init(r);
	}
}
