# Examples arrive with the libhmm API (mirrors, migration, device kernels).
