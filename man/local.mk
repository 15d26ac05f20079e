# Man pages, linted by `make check`: man/lint.sh fails on any groff warning
# (see the script for what else it checks).
dist_man_MANS += man/hmmfs.8 man/hmmctl.1 man/hmm_interval_notifier.3 man/hmm_range_fault.3 man/hmm_mirror.3 man/hmm_launch.3 man/hmm_migrate_vma.3 man/libhmm.3 man/libhmm_dmirror.7
dist_check_SCRIPTS += man/lint.sh
TESTS += man/lint.sh
