import os

# `mlopsnb run` uses a background warm runner unless told otherwise; tests opt in explicitly (tests/test_daemon.py and
# the `runner` cases of tests/test_jobs.py, each with a private runner folder) so a test session leaves no process behind.
os.environ.setdefault('MLOPSNB_DAEMON', '0')
os.environ.pop('MLOPSNB_DAEMON_DIR', None)
