/* SPDX-License-Identifier: MIT */
/*
 * Simulated devices: each is a pool of device memory, its DMA engines and
 * its counters.  The same code backs hmmfs's devices and the devices that
 * libhmm embeds in a process.
 */
#include "config.h"
#include "hmm-internal.h"

#include <errno.h>
#include <numa.h>
#include <stdlib.h>

bool hmm__numa_node_exists(int node)
{
	if (node < 0)
		return false;
	if (numa_available() < 0)
		return node == 0;
	return node <= numa_max_node() && numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)node);
}

static pid_t self_pid;

static void pid_in_child(void)
{
	__atomic_store_n(&self_pid, getpid(), __ATOMIC_RELAXED);
}

/* At load, before any other fork handler of libhmm, which may ask. */
__attribute__((constructor(102))) static void pid_init(void)
{
	pid_in_child();
	pthread_atfork(NULL, NULL, pid_in_child);
}

pid_t hmm__self_pid(void)
{
	return __atomic_load_n(&self_pid, __ATOMIC_RELAXED);
}

const char *hmm__device_type_name(enum hmm__device_type type)
{
	return type == HMM__DEVICE_COHERENT ? "coherent" : "private";
}

int hmm__device_create(unsigned index, const struct hmm__device_config *cfg,
		       struct hmm__device **out)
{
	struct hmm__device *dev = hmm__calloc(1, sizeof(*dev));
	int err;

	if (!dev)
		return -ENOMEM;
	dev->index = index;
	dev->type = cfg->type;
	dev->numa_node = cfg->numa_node;
	dev->config = *cfg;
	pthread_mutex_init(&dev->lru_lock, NULL);
	err = hmm__pool_init(&dev->pool, cfg->page_size, cfg->capacity, cfg->numa_node);
	if (err)
		goto out_free;
	err = hmm__dma_create(cfg->dma_engines, cfg->dma_bw, cfg->dma_latency_ns,
			      cfg->numa_node, &dev->dma);
	if (err)
		goto out_pool;
	*out = dev;
	return 0;

out_pool:
	hmm__pool_destroy(&dev->pool);
	pthread_mutex_destroy(&dev->lru_lock);
out_free:
	hmm__free(dev);
	return err;
}

void hmm__device_forget(struct hmm__device *dev)
{
	hmm__dma_forget(dev->dma);
	hmm__pool_forget(&dev->pool);
	hmm__free(dev);
}

void hmm__device_destroy(struct hmm__device *dev)
{
	if (!dev)
		return;
	HMM_ASSERT(dev->lru_count == 0);
	hmm__dma_destroy(dev->dma);
	hmm__pool_destroy(&dev->pool);
	pthread_mutex_destroy(&dev->lru_lock);
	hmm__free(dev);
}
